"""Tables from rows: the slice a figure set shows, crossovers, the paper's claims beside the
measurements, runs side by side. No drawing here."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd

from harness.data import rows
from harness.reporting import paper, stats


def numeric(table: pd.DataFrame, column: str) -> pd.Series:
    """A column as numbers; NaN where empty, and all NaN when the rows lack the column."""
    if column not in table:
        return pd.Series(float("nan"), index=table.index)
    return pd.to_numeric(table[column], errors="coerce")


def trusted(table: pd.DataFrame, column: str) -> pd.Series:
    """An energy-derived column where a counter measured it validly; NaN (never 0) elsewhere."""
    if "energy_valid" not in table:
        return numeric(table, column).where(False)
    valid = table["energy_valid"].map(rows.truth)
    return numeric(table, column).where(valid)


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (and revision): medians over its ok trials, `trials`, and a 95% interval
    of throughput and latency (`*_lo`, `*_hi`) with `interval` saying what it is made of: over
    trials where there are several, else the window's p10..p90 steps (a spread, not an
    interval of the median). Timing and energy are valid only if every trial's were."""
    if table.empty:
        return table
    keyed = table.assign(
        _key=table.apply(rows.identity, axis=1, columns=rows.IDENTITY + ("revision",))
    )
    out = []
    for _, group in keyed.groupby("_key", sort=False):
        ok = group[group["status"] == "ok"]
        worst = max(group["status"], key=lambda s: rows.status(s).rank)
        base = (ok if len(ok) else group).iloc[0].to_dict()
        base |= {"status": "ok" if len(ok) == len(group) else worst, "trials": len(group)}
        if len(ok) < len(group) and len(ok):
            base["error"] = "; ".join(
                sorted(set(group.loc[group["status"] != "ok", "error"].astype(str)))
            )
        for column in rows.MEDIANS:
            if column in ok:
                base[column] = pd.to_numeric(ok[column], errors="coerce").median()
        if len(ok):  # valid only if every trial was; timing unless flagged, energy if shown valid
            base["timing_valid"] = not bool(untrusted(ok).any())
            if "energy_valid" in ok:
                base["energy_valid"] = bool(ok["energy_valid"].map(rows.truth).all())
        base |= _intervals(ok)
        out.append(base)
    return pd.DataFrame(out).drop(columns="_key")


def _intervals(ok: pd.DataFrame) -> dict[str, float | str]:
    if ok.empty or "latency_ms" not in ok:
        return {}
    latency = pd.to_numeric(ok["latency_ms"], errors="coerce").dropna()
    throughput = pd.to_numeric(ok["throughput_img_s"], errors="coerce").dropna()
    if len(latency) > 1 and len(throughput) > 1:
        _, lat_lo, lat_hi = stats.trial_interval(latency.to_numpy())
        _, thr_lo, thr_hi = stats.trial_interval(throughput.to_numpy())
        return {
            "latency_lo": lat_lo,
            "latency_hi": lat_hi,
            "throughput_lo": thr_lo,
            "throughput_hi": thr_hi,
            "interval": f"95% over {len(ok)} trials",
        }
    row = ok.iloc[0]
    p10, p90 = float(row["latency_ms_p10"]), float(row["latency_ms_p90"])
    batch, thr = float(row["batch_size"]), float(row["throughput_img_s"])
    median = float(row["latency_ms"])
    return {  # a spread around each number (throughput is a mean, not always inside p10..p90)
        "latency_lo": min(p10, median),
        "latency_hi": max(p90, median),
        "throughput_lo": min(1e3 * batch / p90, thr),
        "throughput_hi": max(1e3 * batch / p10, thr),
        "interval": "p10..p90 of one window's steps",
    }


def by_revision(name: str, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A run's rows, one entry per revision measured (named run@revision when several)."""
    revisions = (
        table["revision"].map(lambda v: "" if pd.isna(v) else str(v))
        if "revision" in table
        else None
    )
    if revisions is None or revisions.nunique() < 2:
        return {name: table}
    return {
        f"{name}@{rev or 'checkout'}": table[revisions == rev] for rev in sorted(set(revisions))
    }


def headline_resolution(table: pd.DataFrame) -> int | None:
    """1024² as in the paper when measured, else the largest resolution most mechanisms ran."""
    ok = table[(table["status"] == "ok") & (table["mode"] == "infer")]
    if ok.empty:
        return None
    if 1024 in set(ok["resolution"]):
        return 1024
    counts = ok.groupby("resolution")["attention"].nunique()
    return int(counts[counts == counts.max()].index.max())


def main_slice(table: pd.DataFrame) -> pd.DataFrame:
    """The most measured (model, dtype, batch, device): one configuration per figure set."""
    keys = ["model", "dtype", "batch_size", "device"]
    top = table.groupby(keys, dropna=False).size().idxmax()
    mask = pd.Series(True, index=table.index)
    for key, value in zip(keys, top, strict=True):
        mask &= table[key] == value
    return table[mask]


def untrusted(table: pd.DataFrame) -> pd.Series:
    """Cells whose timing was flagged untrustworthy (timing_valid false)."""
    if "timing_valid" not in table:
        return pd.Series(False, index=table.index)
    return table["timing_valid"].map(rows.falsity)


def _span(sizes: list[int]) -> str:
    return f"{min(sizes)}-{max(sizes)}²" if sizes else "-"


def crossover(table: pd.DataFrame) -> pd.DataFrame:
    """For each mechanism against each reference (the registry's: softmax and sdpa): the
    smallest measured size from which it is faster at every larger measured size, with the
    margin there and whether the margin is outside the noise (its interval excludes 1). A
    baseline that ran out of memory loses."""
    import attention_zoo as zoo

    out = []
    for (mode, name), mine in table.groupby(["mode", "attention"]):
        for base in zoo.with_role("reference"):
            if name == base:
                continue
            theirs = table[(table["mode"] == mode) & (table["attention"] == base)]
            if theirs.empty:
                continue
            out.append(
                {"mode": mode, "mechanism": name, "against": base}
                | _first_lasting_win(mine, theirs)
            )
    return pd.DataFrame(out)


def _first_lasting_win(mine: pd.DataFrame, theirs: pd.DataFrame) -> dict[str, str]:
    a, b = mine.set_index("resolution"), theirs.set_index("resolution")
    sizes = sorted(set(a.index) & set(b.index))
    wins, margins = {}, {}
    for size in sizes:
        me, them = a.loc[size], b.loc[size]
        if me["status"] != "ok":
            wins[size] = False
            continue
        if them["status"] != "ok":
            wins[size], margins[size] = True, (f"{them['status']} for the baseline", "yes")
            continue
        ratio = me["throughput_img_s"] / them["throughput_img_s"]
        lo = me.get("throughput_lo", np.nan) / them.get("throughput_hi", np.nan)
        hi = me.get("throughput_hi", np.nan) / them.get("throughput_lo", np.nan)
        wins[size] = bool(ratio > 1)
        significant = "yes" if np.isfinite(lo) and lo > 1 else "no: within the noise"
        margins[size] = (
            f"{ratio:.2f}x ({lo:.2f}-{hi:.2f})" if np.isfinite(lo) else f"{ratio:.2f}x",
            significant,
        )
    start = None
    for size in reversed(sizes):
        if not wins[size]:
            break
        start = size
    if start is None:
        return {"wins from": f"never within {_span(sizes)}", "margin there": "", "beyond noise": ""}
    label = f"{start}²" + (" (already at the smallest size)" if start == sizes[0] else "")
    margin, significant = margins[start]
    return {"wins from": label, "margin there": margin, "beyond noise": significant}


def scaling(table: pd.DataFrame) -> pd.DataFrame:
    """Per mechanism and mode, the fitted exponent of latency per image and of peak memory
    against tokens over the measured range, beside the claimed complexity tier. What a reviewer
    checks a "linear" claim against (fixed costs pull small-size exponents below the tier)."""
    import attention_zoo as zoo

    out = []
    ok = table[table["status"] == "ok"]
    for (name, mode), group in ok.groupby(["attention", "mode"]):
        group = group.sort_values("tokens")
        if group["tokens"].nunique() < 3:
            continue
        tokens = numeric(group, "tokens").to_numpy(float)
        entry: dict[str, object] = {"mechanism": name, "mode": mode}
        try:
            entry["claimed"] = zoo.info(str(name)).tier
        except ValueError:
            entry["claimed"] = "?"
        for label, values in (
            ("time", numeric(group, "latency_ms") / numeric(group, "batch_size")),
            ("memory", numeric(group, "peak_mem_bytes")),
        ):
            y = values.to_numpy(float)
            keep = np.isfinite(y) & (y > 0)
            if keep.sum() < 3:
                continue
            x, ly = np.log(tokens[keep]), np.log(y[keep])
            slope, icpt = np.polyfit(x, ly, 1)
            fit = slope * x + icpt
            r2 = 1 - ((ly - fit) ** 2).sum() / max(((ly - ly.mean()) ** 2).sum(), 1e-12)
            entry[f"{label} ~ N^k"] = round(float(slope), 2)
            entry[f"{label} fit R²"] = round(float(r2), 3)
        entry["tokens"] = (
            f"{int(tokens.min()):,}-{int(tokens.max()):,} tokens ({len(tokens)} sizes)"
        )
        out.append(entry)
    return pd.DataFrame(out)


def scaling_sentences(fits: pd.DataFrame) -> list[str]:
    return [
        f"{r['mechanism']} ({r['mode']}): time ~ N^{r['time ~ N^k']:.2f} over {r['tokens']}, "
        f"R² {r['time fit R²']:.2f}; claimed {r['claimed']}"
        for _, r in fits.iterrows()
        if "time ~ N^k" in r and pd.notna(r["time ~ N^k"])
    ]


def claims(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The paper's numbers beside this run's, only where comparable: ratios (speed-up over the
    standard ViT) on any hardware, absolute numbers on the paper's own hardware only. Returns
    the table and a line for each claim this run cannot speak to, with what would measure it."""
    model = table[(table["model"] == paper.MODEL)]
    infer = model[(model["mode"] == "infer") & (model["status"] == "ok")]
    at_1024 = infer[infer["resolution"] == 1024].drop_duplicates("attention").set_index("attention")
    missing: list[str] = []
    command = "attnbench sweep=paper (on a GPU)"
    rows_out = []
    devices = " ".join(set(table.get("device_name", pd.Series(dtype=str)).dropna().astype(str)))
    same_hardware = "A100" in devices
    if {"softmax", "linear_infsa"} <= set(at_1024.index):
        thr = at_1024["throughput_img_s"]
        rows_out.append(
            {
                "claim": "speed-up, Linear InfViT over the Standard ViT (x)",
                "paper": paper.SPEEDUP,
                "measured": thr["linear_infsa"] / thr["softmax"],
            }
        )
        if "sdpa" in at_1024.index:
            rows_out.append(
                {
                    "claim": "speed-up, Linear InfViT over sdpa softmax (x; not in the paper)",
                    "paper": float("nan"),
                    "measured": thr["linear_infsa"] / thr["sdpa"],
                }
            )
    else:
        missing.append(f"speed-up at 1024² ({paper.MODEL}, inference): {command}")
    if same_hardware:
        energy = trusted(at_1024.reset_index(), "energy_j_per_img").set_axis(at_1024.index)
        values = {
            "throughput_img_s": numeric(at_1024, "throughput_img_s"),
            "energy_j_per_img": energy,
            "ms_per_img": numeric(at_1024, "latency_ms") / numeric(at_1024, "batch_size"),
            "avg_power_w": trusted(at_1024.reset_index(), "avg_power_w").set_axis(at_1024.index),
        }
        for claim, name, column, stated in paper.AT_1024:
            value = values[column].get(name, np.nan)
            if pd.notna(value):
                rows_out.append({"claim": claim, "paper": stated, "measured": value})
            else:
                missing.append(f"{claim}: {command}")
    else:
        missing.append(
            f"absolute throughput, energy and latency: only comparable on the paper's "
            f"{paper.HARDWARE} (this run: {devices or 'unknown device'})"
        )
    for name, stated in paper.MAX_RESOLUTION.items():
        mine = infer[infer["attention"] == name]["resolution"]
        if mine.empty:
            missing.append(
                f"max inference resolution, {name}: attnbench sweep=resolution (on a GPU)"
            )
        else:
            rows_out.append(
                {
                    "claim": f"max inference resolution reached, {name} (px; this sweep's "
                    f"largest: {int(model['resolution'].max())})",
                    "paper": stated,
                    "measured": int(mine.max()),
                }
            )
    counts = paper_counts()
    for claim, name, column, stated in paper.AT_224:
        unit = 1e6 if column == "params" else 1e9
        rows_out.append(
            {
                "claim": f"{claim} (computed: {paper.MODEL} preset at 224², meta device)",
                "paper": stated / unit,
                "measured": counts[name][column] / unit,
            }
        )
    out = pd.DataFrame(rows_out, columns=["claim", "paper", "measured"])
    out["measured / paper"] = out["measured"] / out["paper"]
    return out, missing


@cache
def paper_counts() -> dict[str, dict[str, int]]:
    """params and FLOPs (2 x MACs, fvcore) per image at 224² of the paper's models, built from the
    preset on the meta device: no sweep and no GPU needed, so every report can compare them."""
    import torch

    import attention_zoo as zoo
    from harness.measuring import flops

    out = {}
    for name in sorted({name for _, name, _, _ in paper.AT_224}):
        with torch.device("meta"):
            model = zoo.ViT.from_preset(paper.MODEL, name)
        params = sum(p.numel() for p in model.parameters())
        out[name] = {"params": params, "flops": 2 * flops.macs_per_image(model, 224, 224)}
    return out


def _number(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if isinstance(value, (float, np.floating)):
        return f"{value:,.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def cell_table(table: pd.DataFrame) -> pd.DataFrame:
    """Every cell of an aggregated run, as text with units: throughput with its interval,
    latency per batch, energy (only where valid), peak memory, GFLOPs, and the why of a status."""

    def interval(row: pd.Series) -> str:
        lo, hi = row.get("throughput_lo"), row.get("throughput_hi")
        if row["status"] != "ok" or lo is None or pd.isna(lo):
            return ""
        return f"{_number(lo)}-{_number(hi)} ({row.get('interval', '')})"

    def timing(row: pd.Series) -> str:
        if row["status"] != "ok":
            return ""
        return (
            "untrustworthy: " + str(row.get("timing_note", "")).split("; ")[0]
            if untrusted(pd.DataFrame([row])).iloc[0]
            else "ok"
        )

    energy = trusted(table, "energy_j_per_img")
    out = pd.DataFrame(
        {
            "mechanism": table["attention"],
            "model": table["model"],
            "px": table["resolution"],
            "mode": table["mode"],
            "dtype": table["dtype"],
            "batch": table["batch_size"],
            "status": table["status"],
            "trials": table.get("trials", pd.Series(1, index=table.index)).fillna(1).astype(int),
            "img/s": numeric(table, "throughput_img_s").map(_number),
            "img/s 95%": table.apply(interval, axis=1),
            "ms/batch": numeric(table, "latency_ms").map(_number),
            "J/img": energy.map(_number),
            "J/img above idle": trusted(table, "energy_above_idle_j_per_img").map(_number),
            "peak MiB": (numeric(table, "peak_mem_bytes") / 2**20).map(lambda v: _number(v, 4)),
            "GFLOPs/img": (numeric(table, "flops") / 1e9).map(lambda v: _number(v, 4)),
            "timing": table.apply(timing, axis=1),
            "why not ok": table["error"].fillna("").astype(str).where(table["status"] != "ok", ""),
        }
    )
    return out.sort_values(["mechanism", "model", "px", "mode"])


# The report's provenance table: where and with what the rows were measured.
PROVENANCE = [c.name for c in rows.COLUMNS.values() if c.group == "provenance"]
PROVENANCE += ["threads", "energy_source", "mem_source"]


def provenance(table: pd.DataFrame) -> pd.DataFrame:
    values = {
        c: ", ".join(sorted({str(v) for v in table[c].dropna()})) or "-"
        for c in PROVENANCE
        if c in table
    }
    times = table["timestamp"].dropna().astype(str)
    if not times.empty:
        values["measured"] = f"{times.min()} .. {times.max()}"
    return pd.DataFrame({"field": list(values), "value": list(values.values())})


def comparison(runs: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """Throughput of every cell the runs measured, side by side (medians over trials), with
    ratios to the first run. Cells are matched without machine-dependent settings (threads), and
    where those differ the `measured with` column names them, so two machines' rows of one cell
    share a line instead of showing as two identical-looking ones."""
    if len(runs) < 2:
        return None
    labels = ["attention", "attention_options", "model", "resolution", "batch_size", "mode"]
    labels.append("dtype")
    parts: dict[str, pd.DataFrame] = {}
    for name, table in runs.items():
        ok = table[table["status"] == "ok"]
        ok = ok.assign(cell=ok.apply(rows.identity, axis=1, columns=rows.EXACT_IDENTITY))
        setting = ok.apply(_setting, axis=1) if len(ok) else pd.Series(dtype=str)
        if setting.nunique() > 1:  # one run of several settings: one column each
            for value, part in ok.groupby(setting):
                parts[f"{name} {value}"] = part
        else:
            parts[name] = ok
    cells = pd.concat([ok[["cell", *labels]] for ok in parts.values()]).drop_duplicates("cell")
    settings = pd.DataFrame(index=cells["cell"])
    for name, ok in parts.items():
        medians = ok.groupby("cell")["throughput_img_s"].median().rename(f"img/s {name}")
        cells = cells.merge(medians, left_on="cell", right_index=True, how="left")
        settings[name] = ok.groupby("cell").apply(lambda g: _setting(g.iloc[0]))
    first = next(iter(parts))
    for name in list(parts)[1:]:
        cells[f"{name} / {first}"] = cells[f"img/s {name}"] / cells[f"img/s {first}"]
    cells["measured with"] = [
        " vs ".join(f"{v} ({k})" for k, v in line.dropna().items())
        if line.dropna().nunique() > 1
        else ""
        for _, line in settings.reindex(cells["cell"]).iterrows()
    ]
    return cells.drop(columns="cell").sort_values(["attention", "model", "resolution", "mode"])


def _setting(row: pd.Series) -> str:
    """A row's machine-dependent settings in words, e.g. 'threads=2'."""
    return ", ".join(f"{c}={rows.canonical(c, row.get(c))}" for c in rows.MACHINE)
