"""Tables from rows: the slice a figure set shows, crossovers, the paper's claims beside the
measurements, runs side by side. No drawing here."""

from __future__ import annotations

import pandas as pd

from . import paper, rows, stats


def numeric(table: pd.DataFrame, column: str) -> pd.Series:
    """A column as numbers; NaN where empty, and all NaN when the rows lack the column."""
    if column not in table:
        return pd.Series(float("nan"), index=table.index)
    return pd.to_numeric(table[column], errors="coerce")


def trusted(table: pd.DataFrame, column: str) -> pd.Series:
    """An energy-derived column where a counter measured it validly; NaN (never 0) elsewhere."""
    if "energy_valid" not in table:
        return numeric(table, column).where(False)
    valid = table["energy_valid"].map(lambda v: v is True or str(v).lower() == "true")
    return numeric(table, column).where(valid)


STATUS_RANK = {"ok": 0, "skipped_oom": 1, "oom": 2, "error": 3}
MEDIANS = [
    "throughput_img_s",
    "latency_ms",
    "latency_ms_p10",
    "latency_ms_p90",
    "energy_j_per_img",
    "sampled_energy_j_per_img",
    "avg_power_w",
    "idle_power_w",
    "peak_mem_bytes",
    "harness_s",
]


def _truth(values: pd.Series) -> pd.Series:
    return values.map(lambda v: v is True or str(v).strip().lower() == "true")


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
        worst = max(group["status"], key=lambda s: STATUS_RANK.get(s, 3))
        base = (ok if len(ok) else group).iloc[0].to_dict()
        base |= {"status": "ok" if len(ok) == len(group) else worst, "trials": len(group)}
        if len(ok) < len(group) and len(ok):
            base["error"] = "; ".join(
                sorted(set(group.loc[group["status"] != "ok", "error"].astype(str)))
            )
        for column in MEDIANS:
            if column in ok:
                base[column] = pd.to_numeric(ok[column], errors="coerce").median()
        for column in ("timing_valid", "energy_valid"):
            if column in ok and len(ok):
                base[column] = bool(_truth(ok[column]).all())
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
    batch = float(row["batch_size"])
    return {
        "latency_lo": p10,
        "latency_hi": p90,
        "throughput_lo": 1e3 * batch / p90,
        "throughput_hi": 1e3 * batch / p10,
        "interval": "p10..p90 of one window's steps",
    }


def by_revision(name: str, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A run's cells aggregated over trials, one entry per revision measured."""
    revisions = table["revision"].fillna("").astype(str) if "revision" in table else None
    if revisions is None or revisions.nunique() < 2:
        return {name: aggregate(table)}
    return {
        f"{name}@{rev or 'checkout'}": aggregate(table[revisions == rev])
        for rev in dict.fromkeys(revisions)
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


def crossover(table: pd.DataFrame) -> pd.DataFrame:
    """Smallest resolution at which each mechanism is faster than softmax / sdpa."""
    out = []
    for (mode, name), mine in table.groupby(["mode", "attention"]):
        entry = {"mode": mode, "attention": name}
        for base in ("softmax", "sdpa"):
            theirs = table[(table["mode"] == mode) & (table["attention"] == base)]
            entry[f"overtakes {base} at"] = _first_win(mine, theirs) if name != base else ""
        out.append(entry)
    return pd.DataFrame(out)


def _first_win(mine: pd.DataFrame, theirs: pd.DataFrame) -> str:
    theirs = theirs.set_index("resolution")
    for _, row in mine[mine["status"] == "ok"].sort_values("resolution").iterrows():
        res = row["resolution"]
        if res not in theirs.index:
            continue
        other = theirs.loc[res]
        if other["status"] in ("oom", "skipped_oom"):
            return f"{res}² (baseline out of memory)"
        if other["status"] == "ok" and row["throughput_img_s"] > other["throughput_img_s"]:
            return f"{res}²"
    return "not in this sweep"


def claims(table: pd.DataFrame) -> pd.DataFrame:
    """Each number the paper states beside what this sweep measured on paper_4l."""
    model = table[(table["model"] == paper.MODEL)]
    infer = model[(model["mode"] == "infer") & (model["status"] == "ok")]
    at_1024 = (
        infer[infer["resolution"] == 1024]
        .assign(
            ms_per_img=lambda d: d["latency_ms"] / d["batch_size"],
            energy_j_per_img=lambda d: trusted(d, "energy_j_per_img"),
            avg_power_w=lambda d: trusted(d, "avg_power_w"),
        )
        .set_index("attention")
    )
    out = []
    header = f"claim ({paper.HARDWARE})"

    def add(claim: str, stated: float, measured: float | None, unit_scale: float = 1.0) -> None:
        value = None if measured is None or pd.isna(measured) else measured / unit_scale
        out.append(
            {
                header: claim,
                "paper": stated / unit_scale,
                "measured": value,
                "measured / paper": None if value is None else value / (stated / unit_scale),
            }
        )

    for claim, name, column, stated in paper.AT_1024:
        value = at_1024[column].get(name) if column in at_1024 and name in at_1024.index else None
        add(claim, stated, value)
    if {"softmax", "linear_infsa"} <= set(at_1024.index):
        thr = at_1024["throughput_img_s"]
        add(
            "speed-up, Linear InfViT over Standard ViT",
            paper.SPEEDUP,
            thr["linear_infsa"] / thr["softmax"],
        )
        if "sdpa" in at_1024.index:
            out.append(
                {
                    header: "speed-up, Linear InfViT over sdpa softmax (not in the paper)",
                    "paper": None,
                    "measured": thr["linear_infsa"] / thr["sdpa"],
                    "measured / paper": None,
                }
            )
    else:
        add("speed-up, Linear InfViT over Standard ViT", paper.SPEEDUP, None)
    for name, stated in paper.MAX_RESOLUTION.items():
        mine = infer[infer["attention"] == name]["resolution"]
        add(
            f"max inference resolution, {name} (px)", stated, mine.max() if not mine.empty else None
        )
    at_224 = model[model["resolution"] == 224].drop_duplicates("attention").set_index("attention")
    for claim, name, column, stated in paper.AT_224:
        value = at_224[column].get(name) if name in at_224.index else None
        add(claim, stated, value, 1e6 if column == "params" else 1e9)
    return pd.DataFrame(out)


CELL_COLUMNS = {
    "attention": "attention",
    "model": "model",
    "resolution": "res",
    "mode": "mode",
    "dtype": "dtype",
    "batch_size": "batch",
    "status": "status",
    "trials": "trials",
    "throughput_img_s": "img/s",
    "throughput_lo": "img/s low",
    "throughput_hi": "img/s high",
    "interval": "interval",
    "latency_ms": "ms/batch",
    "energy_j_per_img": "J/img",
    "peak_gb": "peak GB",
    "gflops": "GFLOPs/img",
    "error": "error",
}


def cell_table(table: pd.DataFrame) -> pd.DataFrame:
    """Every cell of an aggregated run, with its throughput interval."""
    cells = table.assign(peak_gb=table["peak_mem_bytes"] / 1e9, gflops=table["flops"] / 1e9)
    for column in ("trials", "throughput_lo", "throughput_hi", "interval"):
        if column not in cells:
            cells[column] = None
    cells["energy_j_per_img"] = trusted(table, "energy_j_per_img")
    cells = cells[list(CELL_COLUMNS)].rename(columns=CELL_COLUMNS)
    return cells.sort_values(["attention", "model", "res", "mode"])


PROVENANCE = [
    "device_name",
    "device_uuid",
    "driver_version",
    "cuda_version",
    "torch_version",
    "tf32_matmul",
    "power_limit_w",
    "cpu_model",
    "threads",
    "hostname",
    "git_sha",
    "energy_source",
    "mem_source",
]


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
    """Throughput of every cell the runs measured, side by side (matched by cell identity,
    medians over trials), with ratios to the first run."""
    if len(runs) < 2:
        return None
    labels = ["attention", "attention_options", "model", "resolution", "batch_size", "mode"]
    labels.append("dtype")
    parts = []
    for name, table in runs.items():
        ok = table[table["status"] == "ok"].assign(cell=lambda t: t.apply(rows.identity, axis=1))
        parts.append((name, ok))
    cells = pd.concat([ok[["cell", *labels]] for _, ok in parts]).drop_duplicates("cell")
    for name, ok in parts:
        medians = ok.groupby("cell")["throughput_img_s"].median().rename(f"img/s {name}")
        cells = cells.merge(medians, left_on="cell", right_index=True, how="left")
    first = next(iter(runs))
    for name in list(runs)[1:]:
        cells[f"{name} / {first}"] = cells[f"img/s {name}"] / cells[f"img/s {first}"]
    return cells.drop(columns="cell").sort_values(["attention", "model", "resolution", "mode"])
