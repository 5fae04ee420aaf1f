"""`attnbench-check`: did performance regress? It fails closed.

    attnbench-check --baseline FILE_OR_RUN --current RUN_OR_FILE [--tolerance METRIC=F ...]
    attnbench-check --ab RUN_DIR          (the two revisions of one A/B sweep)

Cells are matched by identity (harness.data.rows). status, params, MACs and FLOPs must match exactly
(ok -> oom is a regression). Throughput, latency, energy and peak memory are judged by their
ratio current / baseline, a 95% interval of it and a p-value of "no change", from the raw
samples (paired trials in a same-run A/B: Wilcoxon's signed-rank test and the Hodges-Lehmann
interval; trials apart: Welch's t on the logs; one trial: a bootstrap of its window's steps).
One check makes many comparisons, so the p-values are corrected for the family (Holm): the
chance of any false "regressed" in a run stays at 5%. With tolerance t, in the direction of
"worse":
  regressed     the ratio is worse than 1 + t and the corrected p-value is at most 5%;
  ok            its one-sided 95% bound on "worse" is within 1 + t (improved: also better
                than 1 - t and its other bound better than 1): a non-inferiority test. A run is
                ok only if every comparison is, so (the intersection-union principle) the
                chance of calling a run ok that is worse than 1 + t anywhere is at most 5%
                with no correction for the family;
  inconclusive  anything else: noise too large to tell, a row whose timing (or energy) was
                flagged untrustworthy, or sides measured differently (another memory or
                energy source, other allocator settings). No spread can make a comparison ok.

Each comparison also says the smallest slowdown this run's own noise would have let it call
regressed (`detectable`): what this runner can see, to set a tolerance from.

Exit codes: 0 nothing regressed and every comparison decided; 1 a regression (named); 2 unusable
input (a row whose summary contradicts its own steps among it); 3 inconclusive (no regression
found, but at least one comparison could not be decided). This module imports neither torch nor
matplotlib.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from harness import paths
from harness.data import rows as schema
from harness.data.store import RunStore
from harness.reporting import stats

EXIT_OK, EXIT_REGRESSED, EXIT_UNUSABLE, EXIT_INCONCLUSIVE = 0, 1, 2, 3
ALPHA = 0.05  # the chance of any false "regressed" in one check's family of comparisons
TRUSTED_SHARE = 0.75  # of a cell's ok trials unflagged, or its timed metrics are not judged
NO_TEST = float("nan")  # p-value where the samples give no test (the interval alone decides)
EXACT = [name for name, c in schema.GATED.items() if c.gate and c.gate.how == "exact"]


@dataclass(frozen=True)
class Metric:
    """A ratio-gated column as the check uses it (rows.COLUMNS defines it)."""

    column: str
    higher_is_better: bool
    tolerance: float
    samples: str  # "steps" (per-step times exist) or "trials" (one value per trial only)
    stat: str  # statistic of one window's steps: median or mean
    timed: bool  # untrustworthy timing makes it inconclusive
    normalised: bool  # divided by the reference mechanism in --normalise mode
    unit: str
    sources: tuple[str, ...]  # how it was measured: sides differing in one are not compared

    @classmethod
    def of(cls, column: schema.Column) -> Metric:
        g = column.gate
        assert g is not None
        return cls(
            column.name,
            g.higher_is_better,
            g.tolerance,
            g.samples,
            g.stat,
            g.timed,
            g.normalised,
            column.unit,
            g.sources,
        )


METRICS = {
    name: Metric.of(c) for name, c in schema.GATED.items() if c.gate and c.gate.how == "ratio"
}
NUMERIC = [c.name for c in schema.COLUMNS.values() if c.kind in ("int", "float")]


class UnusableInput(Exception):
    """Input the check cannot judge: exit code 2."""


def _steps(value: Any) -> list[float] | None:
    if isinstance(value, list):
        return [float(v) for v in value]
    if isinstance(value, str) and value.startswith("["):
        return [float(v) for v in json.loads(value)]
    return None


# ---------------------------------------------------------------- input


def load(source: Path, role: str) -> pd.DataFrame:
    """Rows (one per trial) from a results.csv or a run directory; writes nothing."""
    if not source.exists():
        raise UnusableInput(f"{role} {source} does not exist")
    try:
        rows = schema.collect(source)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise UnusableInput(f"{role} {source} is unreadable: {err}") from None
    if rows.empty:
        raise UnusableInput(f"{role} {source} holds no rows")
    missing = [c for c in ("attention", "model", "resolution", "device", "status") if c not in rows]
    if missing:
        raise UnusableInput(
            f"{role} {source} is not an attnbench result (schema): no column {', '.join(missing)}"
        )
    version = rows.get("schema_version", pd.Series([schema.SCHEMA_VERSION])).dropna()
    unreadable = sorted({int(v) for v in version} - set(schema.READABLE_VERSIONS))
    if unreadable:
        raise UnusableInput(
            f"{role} {source} has schema_version {unreadable[0]}; this attnbench reads "
            f"{', '.join(map(str, schema.READABLE_VERSIONS))}: re-measure the baseline"
        )
    rows = rows.copy()
    for column in NUMERIC:
        if column in rows:
            rows[column] = pd.to_numeric(rows[column], errors="coerce")
    revision = rows.get("revision", pd.Series("", index=rows.index))
    rows["revision"] = revision.map(lambda v: "" if pd.isna(v) else str(v))
    for _, row in rows.iterrows():
        why = contradiction(row)
        if why:
            trial = f" trial {row.get('trial')}" if pd.notna(row.get("trial")) else ""
            rev = f" @{row['revision']}" if row["revision"] else ""
            raise UnusableInput(
                f"{role} {source}: the row of {cell_name(row)}{rev}{trial} contradicts itself: "
                f"{why}; its summary columns must come from its samples (re-measure it, or "
                "restore the file)"
            )
    rows["cell"] = rows.apply(schema.identity, axis=1)
    rows["exact_cell"] = rows.apply(schema.identity, axis=1, columns=schema.EXACT_IDENTITY)
    return rows


AGREE = 1e-3  # relative: step times are kept to the nanosecond, so only an edit differs more


def contradiction(row: pd.Series) -> str:
    """Why a measured row's summary columns disagree with its own raw steps ('' if they agree):
    latency_ms is their median, throughput_img_s the batch over their mean, iters their count."""
    steps = _steps(row.get("step_times_ms"))
    if row.get("status") != "ok" or not steps:
        return ""
    batch = float(row.get("batch_size") or 1)
    derived = {
        "latency_ms": float(np.median(steps)),
        "throughput_img_s": batch * 1000 / float(np.mean(steps)),
        "iters": float(len(steps)),
    }
    for column, value in derived.items():
        recorded = row.get(column)
        if recorded is None or pd.isna(recorded):
            continue
        if abs(float(recorded) - value) > AGREE * max(abs(value), 1e-12):
            return (
                f"{column} is {float(recorded):.6g} but its {len(steps)} step_times_ms give "
                f"{value:.6g}"
            )
    return ""


def revisions_in(rows: pd.DataFrame) -> list[str]:
    return sorted(set(rows["revision"]))


def pick_revision(rows: pd.DataFrame, wanted: str | None, role: str) -> pd.DataFrame:
    """One revision's rows: the only one, or, where there are several, the one `wanted` names
    (a commit prefix). A side of one revision is used as it is: a baseline measured from a
    working tree (revision null) is checked against the commit CI measured."""
    found = revisions_in(rows)
    if len(found) <= 1:
        return rows
    if wanted is None:
        raise UnusableInput(
            f"{role} holds several revisions ({', '.join(r or 'null' for r in found)}):"
            " pick one with --revision, or compare them with --ab"
        )
    chosen = [r for r in found if wanted and r.startswith(wanted[:12])] or (
        [""] if wanted == "null" and "" in found else []
    )
    if len(chosen) != 1:
        raise UnusableInput(
            f"--revision {wanted}: {role} holds {', '.join(r or 'null' for r in found)}"
        )
    return rows[rows["revision"] == chosen[0]]


def ab_sides(run: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The baseline and current rows of an A/B sweep: its revisions in the order given."""
    rows = load(run, "A/B run")
    plan = RunStore(run).plan if run.is_dir() else {}
    order = [r["sha"] for r in plan.get("revisions", [])] or revisions_in(rows)
    refs = {r["sha"]: r["ref"] for r in plan.get("revisions", [])}
    present = [r for r in order if r in set(rows["revision"])]
    if len(present) != 2:
        raise UnusableInput(
            f"--ab {run}: needs exactly two revisions, found {len(present)} "
            f"({', '.join(r or 'null' for r in present) or 'none'}); sweep with revision=A,B"
        )
    a, b = present

    def name(sha: str) -> str:
        return f"{refs.get(sha, sha)} ({sha})" if sha else "this checkout (working tree)"

    label = f"{name(a)} -> {name(b)}"
    return rows[rows["revision"] == a], rows[rows["revision"] == b], label


def normalise(rows: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Each trial's times and energy divided by the reference mechanism's, same configuration,
    same trial and revision: a uniformly slower machine cancels out, a change relative to the
    reference does not. The reference's steps are divided by their own median."""
    others = [c for c in schema.IDENTITY if c not in ("attention", "attention_options")]
    slot = rows.apply(lambda r: schema.identity(r, others + list(schema.SAMPLE)), axis=1)
    is_ref = (rows["attention"] == reference) & (rows["status"] == "ok")
    if not is_ref.any():
        raise UnusableInput(
            f"--normalise {reference}: no ok {reference} cell in the run; "
            f"mechanisms present: {', '.join(sorted(set(rows['attention'])))}"
        )
    ref = rows[is_ref].set_index(slot[is_ref])
    ref = ref[~ref.index.duplicated()]
    out = rows.copy()
    matched = ref.reindex(slot.to_numpy())
    for metric in METRICS.values():
        if metric.normalised and metric.column in rows:
            base = matched[metric.column].to_numpy()
            out[metric.column] = rows[metric.column].to_numpy() / base
    ref_median = matched["latency_ms"].to_numpy()
    if "step_times_ms" in rows:
        out["step_times_ms"] = [
            None if steps is None or not np.isfinite(m) else [s / m for s in steps]
            for steps, m in zip(rows["step_times_ms"].map(_steps), ref_median, strict=True)
        ]
    for column in ("latency_ms_p10", "latency_ms_p90"):
        if column in rows:
            out[column] = rows[column].to_numpy() / ref_median
    return out


# ---------------------------------------------------------------- cells


@dataclass
class Cell:
    """One cell's trials on one side."""

    name: str
    rows: pd.DataFrame
    status: str = "ok"
    exact: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, rows: pd.DataFrame) -> Cell:
        statuses = list(rows["status"])
        worst = max(statuses, key=lambda s: schema.status(s).rank)
        exact = {
            c: rows[c].dropna().iloc[0] if rows[c].notna().any() else None
            for c in EXACT[1:]
            if c in rows
        }
        return cls(cell_name(rows.iloc[0]), rows, worst, exact)

    @property
    def trials(self) -> int:
        return len(self.rows)

    def flagged(self, metric: Metric) -> pd.Series:
        """Which ok trials' timing (or energy) was flagged untrustworthy for this metric."""
        ok = self.rows[self.rows["status"] == "ok"]
        flags = pd.Series(False, index=ok.index)
        if metric.timed and "timing_valid" in ok:
            flags |= ~ok["timing_valid"].map(schema.truth).astype(bool)
        if metric.column == "energy_j_per_img" and "energy_valid" in ok:
            flags |= ~ok["energy_valid"].map(schema.truth).astype(bool)
        return flags

    def trusted(self, metric: Metric) -> Cell | None:
        """The cell without its flagged trials, where enough are left to judge it
        (TRUSTED_SHARE of the ok ones, and at least one): a shared machine's burst of noise
        costs a trial, not the verdict; the flagged trials never decide. None: too few left."""
        flags = self.flagged(metric)
        if not flags.any():
            return self
        kept = len(flags) - int(flags.sum())
        if kept < max(1, math.ceil(TRUSTED_SHARE * len(flags))):
            return None
        rows = self.rows.drop(index=flags[flags].index)
        return Cell(self.name, rows, self.status, self.exact)

    def value(self, metric: Metric) -> float | None:
        values = self.rows.loc[self.rows["status"] == "ok", metric.column].dropna()
        return float(values.median()) if len(values) else None

    def per_trial(self, metric: Metric) -> list[float]:
        """The metric's value in each ok trial."""
        values = self.rows.loc[self.rows["status"] == "ok", metric.column].dropna()
        return [float(v) for v in values if v > 0]

    def paired(self, other: Cell, metric: Metric) -> list[tuple[float, float]]:
        """(this, other) values of the trials both sides measured ok."""

        def by_trial(cell: Cell) -> dict[int, float]:
            ok = cell.rows[(cell.rows["status"] == "ok") & cell.rows[metric.column].notna()]
            return {int(t): float(v) for t, v in zip(ok["trial"], ok[metric.column], strict=True)}

        mine, theirs = by_trial(self), by_trial(other)
        return [(mine[t], theirs[t]) for t in sorted(mine) if t in theirs]

    def steps(self) -> list[list[float]] | None:
        """Every timed step of each ok trial (None when the rows do not have them)."""
        ok = self.rows[self.rows["status"] == "ok"]
        steps = [_steps(v) for v in ok.get("step_times_ms", pd.Series(dtype=object))]
        return [s for s in steps if s] if steps and all(steps) else None


def cells(rows: pd.DataFrame, key: str = "cell") -> dict[str, Cell]:
    """The rows grouped into cells by their full identity (`cell`) or by the identity without
    machine-dependent settings (`exact_cell`)."""
    return {k: Cell.of(group) for k, group in rows.groupby(key, sort=False)}


def differences(
    base: pd.DataFrame, cur: pd.DataFrame, columns: Sequence[str]
) -> list[tuple[str, str, str]]:
    """Identity columns whose values the two sides never share: (column, baseline's values,
    current's values)."""
    out = []
    for column in columns:
        if column not in base or column not in cur:
            continue
        b = {schema.canonical(column, v) for v in base[column]}
        c = {schema.canonical(column, v) for v in cur[column]}
        if b.isdisjoint(c):
            out.append((column, _values(b), _values(c)))
    return out


def _said(found: list[tuple[str, str, str]]) -> str:
    return "; ".join(f"baseline {k}={b}, current {k}={c}" for k, b, c in found)


def _values(values: set[Any]) -> str:
    return "/".join(sorted(map(str, values)))


def cell_name(line: dict[str, Any] | pd.Series) -> str:
    """A row's cell in words (its options only when it has some)."""
    options = schema.canonical("attention_options", line.get("attention_options"))
    return schema.cell_words(line, "" if options == "{}" else f" {options}")


# ---------------------------------------------------------------- verdicts


def slowdown_bound(estimate: stats.Estimate, higher_is_better: bool) -> float:
    """The one-sided 95% bound in the direction of "worse", as a slowdown (above 1 is worse):
    what `ok` is judged by, and what --calibrate sizes a tolerance from."""
    below, above = estimate.bounds
    return 1 / below if higher_is_better else above


def judge(estimate: stats.Estimate, tol: float, higher_is_better: bool, p: float | None) -> str:
    """The verdict for a ratio, in the direction of "worse". `p` is the family-corrected
    p-value of no change (None where the samples give no test: the interval decides)."""
    e = estimate
    # as a slowdown: worse is above 1
    worse, worse_lo = (1 / e.point, 1 / e.hi) if higher_is_better else (e.point, e.lo)
    bound = slowdown_bound(e, higher_is_better)
    significant = worse_lo > 1 if p is None else p <= ALPHA
    if worse > 1 + tol and significant:
        return "regressed"
    if bound <= 1 + tol:
        return "improved" if worse < 1 - tol and bound < 1 else "ok"
    return "inconclusive"


def ratio(
    base: Cell, cur: Cell, metric: Metric, paired: bool = False
) -> tuple[stats.Estimate, str]:
    """current / baseline, its interval and p-value, and what they are made of: trials when both
    sides have several (paired by trial in a same-run A/B, where both sides of a trial ran
    back to back), else the steps of the one window, else the recorded p10..p90."""
    if paired:
        pairs = base.paired(cur, metric)
        if len(pairs) > 1:
            estimate = stats.paired_ratio([b for b, _ in pairs], [c for _, c in pairs])
            return estimate, f"signed-rank test over {len(pairs)} paired trials"
    b, c = base.per_trial(metric), cur.per_trial(metric)
    if min(len(b), len(c)) > 1:
        return stats.trial_ratio(b, c), f"t test over {len(b)} and {len(c)} trials"
    bs, cs = base.steps(), cur.steps()
    if metric.samples == "steps" and bs and cs:
        stat = np.mean if metric.stat == "mean" else np.median
        if metric.higher_is_better:  # throughput: images over summed step times
            estimate = stats.ratio(cs, bs, stat)  # base time / current time
        else:
            estimate = stats.ratio(bs, cs, stat)
        return estimate, "bootstrap of one window's steps"
    bv, cv = base.value(metric), cur.value(metric)
    assert bv is not None and cv is not None
    point = cv / bv
    if metric.samples == "steps":  # old rows without raw steps: the recorded p10..p90 envelope
        b10, b90 = base.rows["latency_ms_p10"].median(), base.rows["latency_ms_p90"].median()
        c10, c90 = cur.rows["latency_ms_p10"].median(), cur.rows["latency_ms_p90"].median()
        lo, hi = (b10 / c90, b90 / c10) if metric.higher_is_better else (c10 / b90, c90 / b10)
        return stats.Estimate(point, lo, hi, NO_TEST, (lo, hi)), "p10..p90 envelope"
    return stats.Estimate(point, point, point, NO_TEST, (point, point)), "one value per side"


def compare(
    base_rows: pd.DataFrame,
    cur_rows: pd.DataFrame,
    tolerances: dict[str, float],
    paired: bool = False,
    exact_only: bool = False,
    notes: list[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, Cell], dict[str, Cell]]:
    """One line per compared cell and metric, with its verdict and why; and the cells of each
    side. Exact metrics match cells without machine-dependent settings (threads), so a baseline
    from a runner with another CPU count still vouches for status, params and FLOPs; timed
    metrics match the full identity. What the reader must know is appended to `notes`."""
    notes = [] if notes is None else notes
    exact_b, exact_c = cells(base_rows, "exact_cell"), cells(cur_rows, "exact_cell")
    if not any(key in exact_c for key in exact_b):
        why = _said(differences(base_rows, cur_rows, schema.EXACT_IDENTITY))
        raise UnusableInput(
            "baseline and current have no cell in common"
            + (f": {why}" if why else f" (identity: {', '.join(schema.IDENTITY)})")
        )
    lines = exact_lines(exact_b, exact_c)
    if exact_only:
        return pd.DataFrame(lines), exact_b, exact_c
    baseline, current = cells(base_rows), cells(cur_rows)
    common = [key for key in baseline if key in current]
    alike = {c.rows["exact_cell"].iloc[0] for k, c in baseline.items() if k in current}
    apart = [k for k in exact_b if k in exact_c and k not in alike]
    if apart:
        gaps = differences(exact_b[apart[0]].rows, exact_c[apart[0]].rows, schema.MACHINE)
        said = _said(gaps) or "machine-dependent settings differ"
        setting = f"{gaps[0][0]}={gaps[0][1]}" if gaps else "the baseline's"
        advice = (
            f"{said}: time, energy and memory are compared only between cells measured alike; "
            f"re-measure the baseline on this runner or set {setting} "
            "(--exact-only compares status, params and FLOPs across machines)"
        )
        if not common:
            raise UnusableInput(f"baseline and current share no cell measured alike ({advice})")
        notes.append(f"{len(apart)} cells compared on exact metrics only: {advice}")
    lines += timed_lines(baseline, current, common, tolerances, paired)
    return pd.DataFrame(lines), baseline, current


def exact_lines(baseline: dict[str, Cell], current: dict[str, Cell]) -> list[dict[str, Any]]:
    """status, params, MACs and FLOPs of every cell both sides have."""
    lines = []
    for key in [k for k in baseline if k in current]:
        b, c = baseline[key], current[key]
        line = {"cell": c.name}
        for column in EXACT:
            bv = b.status if column == "status" else b.exact.get(column)
            cv = c.status if column == "status" else c.exact.get(column)
            if bv is None and cv is None:
                continue
            if bv == cv or (pd.isna(bv) and pd.isna(cv)):
                verdict = "ok"
            elif column == "status":
                rank_b, rank_c = schema.status(bv).rank, schema.status(cv).rank
                verdict = (
                    "regressed" if rank_c > rank_b else "improved" if rank_c < rank_b else "changed"
                )
            else:
                verdict = "changed"
            lines.append(
                line
                | {
                    "metric": column,
                    "baseline": bv,
                    "current": cv,
                    "verdict": verdict,
                    "why": "exact",
                }
            )
    return lines


def timed_lines(
    baseline: dict[str, Cell],
    current: dict[str, Cell],
    common: list[str],
    tolerances: dict[str, float],
    paired: bool,
) -> list[dict[str, Any]]:
    """Throughput, latency, energy and memory of the cells both sides measured alike. Whether
    a change is real is decided for the family: Holm's correction over every trusted comparison
    with a test, so a run of many comparisons keeps one false-alarm rate."""
    lines, judged = [], []
    for key in common:
        b, c = baseline[key], current[key]
        if b.status != "ok" or c.status != "ok":
            continue
        for name, metric in METRICS.items():
            if b.value(metric) is None or c.value(metric) is None:
                continue
            tol = tolerances.get(name, metric.tolerance)
            bt, ct = b.trusted(metric), c.trusted(metric)
            trusted = bt is not None and ct is not None
            bt, ct = (b, c) if bt is None or ct is None else (bt, ct)
            bv, cv = bt.value(metric), ct.value(metric)
            if bv is None or cv is None or bv <= 0 or cv <= 0:
                continue
            estimate, source = ratio(bt, ct, metric, paired)
            sign = ">=" if metric.higher_is_better else "<="
            left_out = int(b.flagged(metric).sum() + c.flagged(metric).sum()) if trusted else 0
            if left_out:
                source += f", {left_out} flagged trials left out"
            apart = differences(b.rows, c.rows, metric.sources)
            why = f"untrustworthy {'energy' if 'energy' in name else 'timing'}"
            if apart:
                trusted, why = False, f"measured differently: {_said(apart)}"
            line = {
                "cell": c.name,
                "metric": name,
                "baseline": bv,
                "current": cv,
                "ratio": estimate.point,
                "slowdown_bound": slowdown_bound(estimate, metric.higher_is_better),
                "interval": f"{estimate.lo:.3g}..{estimate.hi:.3g}",
                "bound": f"{sign} {estimate.bounds[0 if metric.higher_is_better else 1]:.4g}",
                "allowed": f"{sign} {1 - tol if metric.higher_is_better else 1 + tol:.4g}",
                "p": estimate.p,
                "verdict": "inconclusive",
                "why": why,
            }
            lines.append(line)
            if trusted:
                judged.append((line, estimate, tol, metric, source))
    tested = [e.p for _, e, *_ in judged if not np.isnan(e.p)]
    corrected = iter(stats.holm(tested))
    for line, e, tol, metric, source in judged:
        p = None if np.isnan(e.p) else next(corrected)
        line["p_holm"] = p
        floor = stats.detectable(e, ALPHA / max(len(tested), 1), 0.0, metric.higher_is_better)
        line["noise_floor"] = floor  # what the noise alone lets it see (for --calibrate)
        line["detectable"] = _detectable(None if floor is None else max(floor, 1 + tol))
        line["verdict"] = judge(e, tol, metric.higher_is_better, p)
        line["why"] = source
        if line["verdict"] == "inconclusive":
            line["why"] = f"noise: bound {line['bound']} beyond the tolerance ({source})"
    return lines


# ---------------------------------------------------------------- output


def github_benchmark(current: dict[str, Cell], bigger: bool) -> list[dict[str, Any]]:
    """github-action-benchmark `customBiggerIsBetter` / `customSmallerIsBetter` entries."""
    entries = []
    for cell in current.values():
        if cell.status != "ok":
            continue
        for metric in METRICS.values():
            value = cell.value(metric)
            if metric.higher_is_better != bigger or value is None:
                continue
            entry: dict[str, Any] = {
                "name": f"{cell.name} {metric.column}",
                "unit": metric.unit,
                "value": value,
            }
            if metric.column == "latency_ms":
                p10, p90 = (
                    cell.rows["latency_ms_p10"].median(),
                    cell.rows["latency_ms_p90"].median(),
                )
                entry["range"] = f"p10 {p10:.4g} .. p90 {p90:.4g}"
            entries.append(entry)
    return entries


def report(
    table: pd.DataFrame, baseline: dict[str, Cell], current: dict[str, Cell], mode: str
) -> int:
    """The table, new and missing cells, and one verdict line; returns the exit code."""
    with pd.option_context(
        "display.max_rows",
        None,
        "display.width",
        250,
        "display.max_colwidth",
        70,
        "display.float_format",
        "{:.4g}".format,
    ):
        columns = [
            c
            for c in (
                "cell",
                "metric",
                "baseline",
                "current",
                "ratio",
                "interval",
                "bound",
                "allowed",
                "p_holm",
                "detectable",
                "verdict",
                "why",
            )
            if c in table
        ]
        print(table[columns].astype(object).fillna("").to_string(index=False))
    new = [c.name for k, c in current.items() if k not in baseline]
    missing = [c.name for k, c in baseline.items() if k not in current]
    for label, names in (("new (not in baseline)", new), ("missing (not in current)", missing)):
        for name in names:
            print(f"{label}: {name}")
    trials = min(c.trials for c in [*baseline.values(), *current.values()])
    if trials < 2:
        print(
            "note: one trial per cell: intervals see only the noise within one window, not "
            "between runs; measure with trials=3 (or more) for verdicts that hold up"
        )
    if "p_holm" in table:
        tested = int(table["p_holm"].notna().sum())
        print(
            f"note: regressions decided for the family: Holm's correction over {tested} "
            f"comparisons, at most {ALPHA:.0%} chance of any false alarm (p_holm)"
        )
    cells_compared = table["cell"].nunique()
    extra = f" ({len(new)} new, {len(missing)} missing)" if new or missing else ""
    bad = table[table["verdict"].isin(["regressed", "changed"])]
    unsure = table[table["verdict"] == "inconclusive"]
    if not bad.empty:
        named = "; ".join(f"{r.cell} {r.metric} {_change(r)}" for r in bad.itertuples())
        print(
            f"attnbench-check: REGRESSION in {bad['cell'].nunique()} of {cells_compared} "
            f"cells{mode}: {named}{extra}"
        )
        return EXIT_REGRESSED
    if not unsure.empty:
        named = "; ".join(f"{r.cell} {r.metric} ({r.why})" for r in unsure.itertuples())
        print(
            f"attnbench-check: INCONCLUSIVE: {unsure['cell'].nunique()} of {cells_compared} "
            f"cells could not be judged{mode}, none regressed: {named}{extra}"
        )
        return EXIT_INCONCLUSIVE
    print(f"attnbench-check: OK: {cells_compared} cells compared{mode}, nothing regressed{extra}")
    return EXIT_OK


def _detectable(ratio: float | None) -> str:
    """The smallest slowdown this run could have called regressed, in words."""
    if ratio is None:
        return ""
    if math.isinf(ratio):
        return "none: too few paired trials"
    return f">= {ratio - 1:.1%} worse"


def _change(line: Any) -> str:
    if getattr(line, "ratio", None) is None or pd.isna(line.ratio):
        return f"{line.baseline} -> {line.current}"
    return f"{line.ratio:.3f}x (interval {line.interval}, allowed {line.allowed})"


# ---------------------------------------------------------------- calibration

MARGIN = 1.25  # a calibrated tolerance covers the A/A's widest bound on worse by this much
FLOOR = 0.01  # and is never below 1%: a tolerance tighter than that asks for luck
STEP = 0.005  # rounded up to half a percent


def calibrate(table: pd.DataFrame, label: str, out: Path) -> int:
    """From an A/A (the same code on both sides): per metric, the tolerance this runner can
    hold, i.e. the widest one-sided bound on "worse" (what `ok` is judged by) of that metric
    over the run's cells, with a margin, and what it could detect; written as an
    attnbench-check --config file. An A/A whose sides differ significantly is not an A/A:
    refused."""
    timed = table[table["metric"].isin(list(METRICS)) & table["p_holm"].notna()]
    if timed.empty:
        raise UnusableInput(
            f"--calibrate: {label} has no comparison with a test (paired trials): measure the "
            "A/A with trials=10 or more"
        )
    differ = timed[timed["p_holm"] <= ALPHA]
    if not differ.empty:
        named = "; ".join(f"{r.cell} {r.metric} {_change(r)}" for r in differ.itertuples())
        raise UnusableInput(
            f"--calibrate: the two sides of {label} differ significantly ({named}): an A/A "
            "measures the same code twice; nothing written"
        )
    tolerance: dict[str, float] = {}
    lines = []
    for name, group in timed.groupby("metric", sort=False):
        widest = float(group["slowdown_bound"].max()) - 1
        held = max(FLOOR, math.ceil(max(widest, 0) * MARGIN / STEP) * STEP)
        tolerance[str(name)] = round(held, 4)
        seen = pd.to_numeric(group["noise_floor"], errors="coerce")
        seen = seen[np.isfinite(seen)]
        detect = f"{float(seen.median()) - 1:.1%}" if len(seen) else "nothing"
        lines.append(
            f"#   {name}: widest bound {widest:+.1%} over {len(group)} cells -> "
            f"{held:.1%}; median smallest detectable slowdown {detect}"
        )
    header = [
        "# attnbench-check tolerances calibrated from an A/A on this runner",
        f"# (attnbench-check --ab ... --calibrate, {label}; attnbench {paths.version()}):",
        f"# each is the metric's widest one-sided 95% bound on worse x {MARGIN}, at least "
        f"{FLOOR:.0%}, rounded up to {STEP:.1%}.",
        *lines,
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header) + "\n" + yaml.safe_dump({"tolerance": tolerance}))
    print("\n".join(line.removeprefix("# ") for line in header))
    print(f"attnbench-check: calibrated tolerances written to {out}")
    return EXIT_OK


# ---------------------------------------------------------------- command line


def settings(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"tolerance": {}, "normalise": None}
    if args.config is not None:
        try:
            loaded = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise UnusableInput(f"config {args.config} is unreadable: {err}") from None
        unknown = set(loaded) - set(out)
        if unknown:
            raise UnusableInput(
                f"config {args.config}: unknown keys {sorted(unknown)}; valid: {', '.join(out)}"
            )
        out |= {k: v for k, v in loaded.items() if v is not None}
    for item in args.tolerance:
        name, _, value = item.partition("=")
        try:
            out["tolerance"][name] = float(value)
        except ValueError:
            raise UnusableInput(f"--tolerance {item!r} is not METRIC=FRACTION") from None
    unknown = set(out["tolerance"]) - set(METRICS)
    if unknown:
        raise UnusableInput(
            f"unknown metric {', '.join(sorted(unknown))} in tolerances; "
            f"valid: {', '.join(METRICS)}"
        )
    bad = {k: v for k, v in out["tolerance"].items() if not 0 <= v < 1}
    if bad:
        raise UnusableInput(f"tolerances are fractions in [0, 1): {bad}")
    if args.normalise:
        out["normalise"] = args.normalise
    return out


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="attnbench-check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"attnbench {paths.version()}")
    parser.add_argument("--baseline", type=Path, help="results.csv or run dir")
    parser.add_argument("--current", type=Path, help="run dir or results.csv")
    parser.add_argument(
        "--ab", type=Path, metavar="RUN_DIR", help="compare an A/B sweep's revisions"
    )
    parser.add_argument(
        "--revision", help="in a run of several revisions, the one to check (commit prefix)"
    )
    parser.add_argument(
        "--exact-only", action="store_true", help="only status, params, MACs, FLOPs"
    )
    parser.add_argument(
        "--config", type=Path, help="YAML: tolerance: {metric: fraction}, normalise: REF"
    )
    parser.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="METRIC=FRACTION",
        help=f"allowed relative change; metrics: {', '.join(METRICS)}",
    )
    parser.add_argument("--normalise", metavar="REF", help="compare relative to mechanism REF")
    parser.add_argument(
        "--calibrate",
        type=Path,
        metavar="OUT.yaml",
        help="with --ab of an A/A (the same code twice): write the tolerances this runner holds",
    )
    parser.add_argument("--github-bigger", type=Path, help="write customBiggerIsBetter JSON")
    parser.add_argument("--github-smaller", type=Path, help="write customSmallerIsBetter JSON")
    args = parser.parse_args(argv)
    if (args.ab is None) == (args.baseline is None or args.current is None):
        parser.error("give --baseline and --current, or --ab RUN_DIR")
    if args.calibrate is not None and args.ab is None:
        parser.error("--calibrate needs --ab RUN_DIR: an A/A sweep (revision=X,Y of the same code)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        config = settings(args)
        if args.ab is not None:
            base_rows, cur_rows, label = ab_sides(args.ab)
            mode = f" (A/B {label})"
        else:
            base_rows = pick_revision(load(args.baseline, "baseline"), args.revision, "baseline")
            cur_rows = pick_revision(load(args.current, "current"), args.revision, "current")
            mode = ""
        raw_current = cells(cur_rows)
        if config["normalise"]:
            base_rows = normalise(base_rows, config["normalise"])
            cur_rows = normalise(cur_rows, config["normalise"])
            mode += f", normalised to {config['normalise']}"
        notes: list[str] = []
        table, baseline, current = compare(
            base_rows, cur_rows, config["tolerance"], args.ab is not None, args.exact_only, notes
        )
        if args.calibrate is not None:
            return calibrate(table, label, args.calibrate)
    except UnusableInput as err:
        print(f"attnbench-check: unusable input: {err}", file=sys.stderr)
        return EXIT_UNUSABLE
    if args.exact_only:
        mode += ", exact metrics only (cells matched without threads)"
    for path, bigger in ((args.github_bigger, True), (args.github_smaller, False)):
        if path is not None:
            path.write_text(json.dumps(github_benchmark(raw_current, bigger), indent=1))
    if config["normalise"]:
        print(f"(time and energy above are relative to {config['normalise']} in the same run)")
    for note in notes:
        print(f"note: {note}")
    return report(table, baseline, current, mode)


if __name__ == "__main__":
    sys.exit(main())
