"""`attnbench-check --baseline FILE --current RUN_DIR_OR_FILE`: did performance regress?

Cells are matched by identity. params, MACs, FLOPs and status must match exactly (ok -> oom is
a regression). Throughput, latency, energy per image and peak memory compare by ratio within a
tolerance per metric, widened by the spread (p10..p90) each row recorded, so noise is not called
a regression. With --normalise REF, time and energy are first divided by the REF mechanism's
cell of the same configuration in the same run, so a uniformly slower or busier machine passes.

Exit codes: 0 nothing regressed, 1 a regression (named), 2 unusable input.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from . import rows as schema
from .rows import SCHEMA_VERSION

EXACT = ["status", "params", "macs", "flops"]


@dataclass(frozen=True)
class Metric:
    column: str
    higher_is_better: bool
    tolerance: float
    noisy: bool  # widened by the rows' recorded latency spread
    normalised: bool  # divided by the reference mechanism in --normalise mode
    unit: str


METRICS = {
    "throughput_img_s": Metric("throughput_img_s", True, 0.10, True, True, "img/s"),
    "latency_ms": Metric("latency_ms", False, 0.10, True, True, "ms"),
    "energy_j_per_img": Metric("energy_j_per_img", False, 0.10, True, True, "J/img"),
    "peak_mem_bytes": Metric("peak_mem_bytes", False, 0.05, False, False, "bytes"),
}
STATUS_RANK = {"ok": 0, "error": 1, "oom": 1, "skipped_oom": 1}


class UnusableInput(Exception):
    """Input the check cannot judge: exit code 2."""


def load(source: Path, role: str) -> pd.DataFrame:
    """Rows from a results.csv or a sweep directory (its job dirs or its results.csv)."""
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
    version = rows.get("schema_version", pd.Series([SCHEMA_VERSION])).dropna()
    if not version.empty and int(version.max()) != SCHEMA_VERSION:
        raise UnusableInput(
            f"{role} {source} has schema_version {int(version.max())}; this "
            f"attnbench reads {SCHEMA_VERSION}: re-measure the baseline"
        )
    rows = rows.copy()
    numeric = ["params", "macs", "flops", "latency_ms_p10", "latency_ms_p90", *METRICS]
    for column in (c for c in numeric if c in rows):
        rows[column] = pd.to_numeric(rows[column], errors="coerce")
    rows["device_class"] = rows["device"].map(schema.device_class)
    rows["attention_options"] = rows.get("attention_options", pd.Series(dtype=object)).map(
        lambda v: schema.canonical("attention_options", v)
    )
    rows["cell"] = rows.apply(schema.identity, axis=1)
    rows["spread"] = rows.apply(spread, axis=1)  # from raw times, before any normalising
    duplicated = rows.duplicated("cell", keep=False)
    if duplicated.any():
        raise UnusableInput(
            f"{role} {source} has {int(duplicated.sum())} rows for the same "
            "cells; check one sweep at a time"
        )
    return rows.set_index("cell")


def spread(row: pd.Series) -> float:
    """Half the p10..p90 range of the step time, relative to its median (0 when unknown)."""
    try:
        value = (row["latency_ms_p90"] - row["latency_ms_p10"]) / (2 * row["latency_ms"])
    except (KeyError, TypeError, ZeroDivisionError):
        return 0.0
    return float(value) if pd.notna(value) and value > 0 else 0.0


def normalise(rows: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Time and energy of each cell divided by the reference mechanism's same configuration."""
    out = rows.copy()
    others = [c for c in schema.IDENTITY if c not in ("attention", "attention_options")]
    config = rows.apply(lambda r: schema.identity(r, others), axis=1)
    is_ref = (rows["attention"] == reference) & (rows["status"] == "ok")
    ref = rows[is_ref].set_index(config[is_ref])
    if ref.empty:
        raise UnusableInput(
            f"--normalise {reference}: no ok {reference} cell in the run; "
            f"mechanisms present: {', '.join(sorted(set(rows['attention'])))}"
        )
    keys = config.to_numpy()
    for metric in METRICS.values():
        if not metric.normalised or metric.column not in rows:
            continue
        base = ref[metric.column].reindex(keys).to_numpy()
        out[metric.column] = rows[metric.column].to_numpy() / base
    return out


def compare(
    baseline: pd.DataFrame,
    current: pd.DataFrame,
    tolerances: dict[str, float],
    spread_factor: float = 1.0,
) -> pd.DataFrame:
    """One line per compared cell and metric, with a verdict."""
    common = baseline.index.intersection(current.index)
    if common.empty:
        raise UnusableInput(
            "baseline and current have no cell in common (identity: "
            + ", ".join(schema.IDENTITY)
            + ")"
        )
    lines = []
    for key in common:
        b, c = baseline.loc[key], current.loc[key]
        cell = {"cell": cell_name(c)}
        for column in EXACT:
            if column not in b or column not in c:
                continue
            bv, cv = b[column], c[column]
            if pd.isna(bv) and pd.isna(cv) or bv == cv:
                verdict = "ok"
            elif column == "status":
                verdict = (
                    "regressed"
                    if STATUS_RANK.get(cv, 1) > STATUS_RANK.get(bv, 1)
                    else "improved"
                    if STATUS_RANK.get(cv, 1) < STATUS_RANK.get(bv, 1)
                    else "changed"
                )
            else:
                verdict = "changed"
            lines.append(
                cell
                | {
                    "metric": column,
                    "baseline": bv,
                    "current": cv,
                    "ratio": None,
                    "allowed": "exact",
                    "verdict": verdict,
                }
            )
        if b.get("status") != "ok" or c.get("status") != "ok":
            continue
        noise = b["spread"] + c["spread"]
        for name, metric in METRICS.items():
            bv, cv = b.get(metric.column), c.get(metric.column)
            if bv is None or cv is None or pd.isna(bv) or pd.isna(cv) or bv <= 0:
                continue
            ratio = cv / bv
            tol = tolerances.get(name, metric.tolerance) + (
                spread_factor * noise if metric.noisy else 0.0
            )
            worse = ratio < 1 - tol if metric.higher_is_better else ratio > 1 + tol
            better = ratio > 1 + tol if metric.higher_is_better else ratio < 1 - tol
            lines.append(
                cell
                | {
                    "metric": name,
                    "baseline": bv,
                    "current": cv,
                    "ratio": ratio,
                    "allowed": f"{'>=' if metric.higher_is_better else '<='} "
                    f"{1 - tol if metric.higher_is_better else 1 + tol:.3f}",
                    "verdict": "regressed" if worse else "improved" if better else "ok",
                }
            )
    return pd.DataFrame(lines)


def cell_name(line: dict[str, Any] | pd.Series) -> str:
    """A row's cell in words (its options only when it has some)."""
    options = "" if line["attention_options"] in ("{}", "") else f" {line['attention_options']}"
    return (
        f"{line['attention']}{options} {line['model']} {line['resolution']}px "
        f"b{line['batch_size']} {line['mode']} {line['dtype']} {line['device_class']}"
    )


def github_benchmark(current: pd.DataFrame, bigger: bool) -> list[dict[str, Any]]:
    """github-action-benchmark `customBiggerIsBetter` / `customSmallerIsBetter` entries."""
    entries = []
    for _, row in current.iterrows():
        if row.get("status") != "ok":
            continue
        name = cell_name(row)
        for metric in METRICS.values():
            value = row.get(metric.column)
            if metric.higher_is_better != bigger or value is None or pd.isna(value):
                continue
            entry = {"name": f"{name} {metric.column}", "unit": metric.unit, "value": float(value)}
            if metric.noisy and metric.column == "latency_ms":
                entry["range"] = (
                    f"p10 {row['latency_ms_p10']:.4g} .. p90 {row['latency_ms_p90']:.4g}"
                )
            entries.append(entry)
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="attnbench-check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--baseline", type=Path, required=True, help="results.csv or run dir")
    parser.add_argument("--current", type=Path, required=True, help="run dir or results.csv")
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML: tolerance: {metric: fraction}, normalise: REF, spread_factor: k",
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
        "--spread-factor",
        type=float,
        help="multiples of the recorded spread added to each tolerance (default 1)",
    )
    parser.add_argument("--github-bigger", type=Path, help="write customBiggerIsBetter JSON")
    parser.add_argument("--github-smaller", type=Path, help="write customSmallerIsBetter JSON")
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
        baseline = load(args.baseline, "baseline")
        current = load(args.current, "current")
        raw_current = current
        if settings["normalise"]:
            baseline = normalise(baseline, settings["normalise"])
            current = normalise(current, settings["normalise"])
        table = compare(baseline, current, settings["tolerance"], settings["spread_factor"])
    except UnusableInput as err:
        print(f"attnbench-check: unusable input: {err}", file=sys.stderr)
        return 2
    for path, bigger in ((args.github_bigger, True), (args.github_smaller, False)):
        if path is not None:
            path.write_text(json.dumps(github_benchmark(raw_current, bigger), indent=1))
    return report(table, baseline, current, settings)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {"tolerance": {}, "normalise": None, "spread_factor": 1.0}
    if args.config is not None:
        try:
            loaded = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise UnusableInput(f"config {args.config} is unreadable: {err}") from None
        unknown = set(loaded) - set(settings)
        if unknown:
            raise UnusableInput(
                f"config {args.config}: unknown keys {sorted(unknown)}; valid: "
                f"{', '.join(settings)}"
            )
        settings |= {k: v for k, v in loaded.items() if v is not None}
    for item in args.tolerance:
        name, _, value = item.partition("=")
        try:
            settings["tolerance"][name] = float(value)
        except ValueError:
            raise UnusableInput(f"--tolerance {item!r} is not METRIC=FRACTION") from None
    unknown = set(settings["tolerance"]) - set(METRICS)
    if unknown:
        raise UnusableInput(
            f"unknown metric {', '.join(sorted(unknown))} in tolerances; "
            f"valid: {', '.join(METRICS)}"
        )
    if args.normalise:
        settings["normalise"] = args.normalise
    if args.spread_factor is not None:
        settings["spread_factor"] = args.spread_factor
    return settings


def report(
    table: pd.DataFrame, baseline: pd.DataFrame, current: pd.DataFrame, settings: dict[str, Any]
) -> int:
    new = current.index.difference(baseline.index)
    missing = baseline.index.difference(current.index)
    shown = table[["cell", "metric", "baseline", "current", "ratio", "allowed", "verdict"]]
    with pd.option_context(
        "display.max_rows",
        None,
        "display.width",
        200,
        "display.max_colwidth",
        60,
        "display.float_format",
        "{:.4g}".format,
    ):
        print(shown.to_string(index=False))
    for label, keys, side in (
        ("new (not in baseline)", new, current),
        ("missing (not in current)", missing, baseline),
    ):
        for key in keys:
            print(f"{label}: {cell_name(side.loc[key])}")
    bad = shown[shown["verdict"].isin(["regressed", "changed"])]
    mode = f", normalised to {settings['normalise']}" if settings["normalise"] else ""
    cells = shown["cell"].nunique()
    extra = f" ({len(new)} new, {len(missing)} missing)" if len(new) or len(missing) else ""
    if settings["normalise"]:
        print(
            f"(time and energy values above are relative to {settings['normalise']} in the "
            "same run)"
        )
    if bad.empty:
        print(f"attnbench-check: OK: {cells} cells compared{mode}, nothing regressed{extra}")
        return 0
    named = "; ".join(f"{r.cell} {r.metric} {_change(r)}" for r in bad.itertuples())
    print(
        f"attnbench-check: REGRESSION in {bad['cell'].nunique()} of {cells} cells{mode}: "
        f"{named}{extra}"
    )
    return 1


def _change(line: Any) -> str:
    if line.ratio is None or pd.isna(line.ratio):
        return f"{line.baseline} -> {line.current}"
    return f"{line.ratio:.3f}x (allowed {line.allowed})"
