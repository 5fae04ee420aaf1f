"""Tables from rows: the slice a figure set shows, crossovers, the paper's claims beside the
measurements, runs side by side. No drawing here."""

from __future__ import annotations

import pandas as pd

from . import paper, rows


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
    "throughput_img_s": "img/s",
    "latency_ms": "ms/batch",
    "energy_j_per_img": "J/img",
    "peak_gb": "peak GB",
    "gflops": "GFLOPs/img",
    "error": "error",
}


def cell_table(table: pd.DataFrame) -> pd.DataFrame:
    cells = table.assign(peak_gb=table["peak_mem_bytes"] / 1e9, gflops=table["flops"] / 1e9)
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
