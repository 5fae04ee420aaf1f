"""`attnbench-report RUN_DIR... [--out DIR]`: results.csv from the job directories, and a report
(report.md, and report.html with its figures embedded) re-drawing the paper's efficiency figures
from the measured rows."""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from . import figures
from .rows import COLUMNS, ROW_FILE
from .sweep import read_plan

RESULTS = "results.csv"
REPORTS = Path("reports")

# PAPER.md, A100 40 GB, 4-layer models at 1024², inference.
PAPER_CLAIMS = [
    ("throughput, Standard ViT (img/s)", "softmax", "throughput_img_s", 17.19),
    ("throughput, Linear InfViT (img/s)", "linear_infsa", "throughput_img_s", 230.95),
    ("energy, Standard ViT (J/img)", "softmax", "energy_j_per_img", 11.63),
    ("energy, Linear InfViT (J/img)", "linear_infsa", "energy_j_per_img", 0.87),
    ("latency, Standard ViT (ms/img)", "softmax", "ms_per_img", 58.16),
    ("latency, Linear InfViT (ms/img)", "linear_infsa", "ms_per_img", 4.33),
    ("power = energy x throughput, Standard ViT (W)", "softmax", "avg_power_w", 17.19 * 11.63),
    (
        "power = energy x throughput, Linear InfViT (W)",
        "linear_infsa",
        "avg_power_w",
        230.95 * 0.87,
    ),
]
PAPER_RATIO = 13.4
PAPER_MAX_RESOLUTION = {"softmax": 1024, "linear_infsa": 9216}
PAPER_AT_224 = [
    ("params, Standard ViT 4L (M)", "softmax", "params", 57.7e6),
    ("params, Linear InfViT 4L (M)", "linear_infsa", "params", 53.5e6),
    ("params, Pure InfViT 4L (M)", "infsa", "params", 57.7e6),
    ("GFLOPs, Standard ViT 4L", "softmax", "flops", 17.5e9),
    ("GFLOPs, Linear InfViT 4L", "linear_infsa", "flops", 59e9),
    ("GFLOPs, Pure InfViT 4L", "infsa", "flops", 59e9),
]


def collect(source: Path) -> pd.DataFrame:
    """A sweep's rows: from its job directories (writing its results.csv), or from a CSV."""
    if source.is_file():
        return pd.read_csv(source)
    found = []
    for path in sorted(source.glob(f"*/{ROW_FILE}")):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError) as err:
            print(f"attnbench-report: skipping unreadable {path}: {err}", file=sys.stderr)
    if not found:
        if (source / RESULTS).is_file():
            return pd.read_csv(source / RESULTS)
        raise FileNotFoundError(f"no {ROW_FILE} under {source} and no {RESULTS}")
    frame = pd.DataFrame(found)
    columns = [c for c in COLUMNS if c in frame] + [c for c in frame if c not in COLUMNS]
    frame = frame[columns]
    if "attention_options" in frame:  # a dict in JSON, one string cell in the CSV
        frame["attention_options"] = frame["attention_options"].map(
            lambda v: json.dumps(v or {}, sort_keys=True)
        )
    _atomic_text(source / RESULTS, frame.to_csv(index=False))
    return frame


# ---------------------------------------------------------------- tables


def headline_resolution(rows: pd.DataFrame) -> int | None:
    """1024² as in the paper when measured, else the largest resolution most mechanisms ran."""
    ok = rows[(rows["status"] == "ok") & (rows["mode"] == "infer")]
    if ok.empty:
        return None
    if 1024 in set(ok["resolution"]):
        return 1024
    counts = ok.groupby("resolution")["attention"].nunique()
    return int(counts[counts == counts.max()].index.max())


def main_slice(rows: pd.DataFrame) -> pd.DataFrame:
    """The most measured (model, dtype, batch, device): one configuration per figure set."""
    keys = ["model", "dtype", "batch_size", "device"]
    top = rows.groupby(keys, dropna=False).size().idxmax()
    mask = pd.Series(True, index=rows.index)
    for key, value in zip(keys, top, strict=True):
        mask &= rows[key] == value
    return rows[mask]


def crossover(rows: pd.DataFrame) -> pd.DataFrame:
    """Smallest resolution at which each mechanism is faster than softmax / sdpa."""
    out = []
    for (mode, name), mine in rows.groupby(["mode", "attention"]):
        entry = {"mode": mode, "attention": name}
        for base in ("softmax", "sdpa"):
            theirs = rows[(rows["mode"] == mode) & (rows["attention"] == base)]
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


def claims(rows: pd.DataFrame) -> pd.DataFrame:
    """Each number the paper states beside what this sweep measured on paper_4l."""
    paper = rows[(rows["model"] == "paper_4l")]
    infer = paper[(paper["mode"] == "infer") & (paper["status"] == "ok")]
    at_1024 = (
        infer[infer["resolution"] == 1024]
        .assign(
            ms_per_img=lambda d: d["latency_ms"] / d["batch_size"],
            energy_j_per_img=lambda d: figures.trusted(d, "energy_j_per_img"),
            avg_power_w=lambda d: figures.trusted(d, "avg_power_w"),
        )
        .set_index("attention")
    )
    out = []

    def add(claim: str, stated: float, measured: float | None, unit_scale: float = 1.0):
        value = None if measured is None or pd.isna(measured) else measured / unit_scale
        out.append(
            {
                "claim (A100 40 GB)": claim,
                "paper": stated / unit_scale,
                "measured": value,
                "measured / paper": None if value is None else value / (stated / unit_scale),
            }
        )

    for claim, name, column, stated in PAPER_CLAIMS:
        value = at_1024[column].get(name) if column in at_1024 and name in at_1024.index else None
        add(claim, stated, value)
    if {"softmax", "linear_infsa"} <= set(at_1024.index):
        ratio = (
            at_1024.loc["linear_infsa", "throughput_img_s"]
            / at_1024.loc["softmax", "throughput_img_s"]
        )
        add("speed-up, Linear InfViT over Standard ViT", PAPER_RATIO, ratio)
        if "sdpa" in at_1024.index:
            ratio = (
                at_1024.loc["linear_infsa", "throughput_img_s"]
                / at_1024.loc["sdpa", "throughput_img_s"]
            )
            out.append(
                {
                    "claim (A100 40 GB)": "speed-up, Linear InfViT over sdpa softmax "
                    "(not in the paper)",
                    "paper": None,
                    "measured": ratio,
                    "measured / paper": None,
                }
            )
    else:
        add("speed-up, Linear InfViT over Standard ViT", PAPER_RATIO, None)
    for name, stated in PAPER_MAX_RESOLUTION.items():
        mine = infer[infer["attention"] == name]["resolution"]
        add(
            f"max inference resolution, {name} (px)", stated, mine.max() if not mine.empty else None
        )
    at_224 = paper[paper["resolution"] == 224].drop_duplicates("attention").set_index("attention")
    for claim, name, column, stated in PAPER_AT_224:
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


def cell_table(rows: pd.DataFrame) -> pd.DataFrame:
    table = rows.assign(peak_gb=rows["peak_mem_bytes"] / 1e9, gflops=rows["flops"] / 1e9)
    table["energy_j_per_img"] = figures.per_image_energy(rows)
    table = table[list(CELL_COLUMNS)].rename(columns=CELL_COLUMNS)
    return table.sort_values(["attention", "model", "res", "mode"])


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


def provenance(rows: pd.DataFrame) -> pd.DataFrame:
    values = {
        c: ", ".join(sorted({str(v) for v in rows[c].dropna()})) or "-"
        for c in PROVENANCE
        if c in rows
    }
    times = rows["timestamp"].dropna().astype(str)
    if not times.empty:
        values["measured"] = f"{times.min()} .. {times.max()}"
    return pd.DataFrame({"field": list(values), "value": list(values.values())})


def comparison(runs: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """Throughput of the cells every run measured, side by side, with ratios to the first."""
    if len(runs) < 2:
        return None
    keys = ["attention", "model", "resolution", "batch_size", "mode", "dtype"]
    names = list(runs)
    merged = None
    for name, rows in runs.items():
        ok = rows[rows["status"] == "ok"][keys + ["throughput_img_s"]]
        ok = ok.rename(columns={"throughput_img_s": f"img/s {name}"})
        merged = ok if merged is None else merged.merge(ok, on=keys, how="outer")
    for name in names[1:]:
        merged[f"{name} / {names[0]}"] = merged[f"img/s {name}"] / merged[f"img/s {names[0]}"]
    return merged.sort_values(keys)


# ---------------------------------------------------------------- rendering


@dataclass
class Section:
    title: str
    text: str = ""
    table: pd.DataFrame | None = None
    figure: Figure | None = None


def sections_for(name: str, rows: pd.DataFrame) -> list[Section]:
    import matplotlib.pyplot as plt

    main = main_slice(rows)
    model, dtype, batch, device = (
        main.iloc[0][k] for k in ("model", "dtype", "batch_size", "device")
    )
    res = headline_resolution(main)
    counts = rows["status"].value_counts().to_dict()
    out = [
        Section(
            f"Run {name}",
            f"{len(rows)} cells: "
            + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            + f". Figures: {model}, {dtype}, batch "
            f"{batch}, {device}.",
        )
    ]
    if res is not None:
        out += [
            Section(f"Complexity tiers ({name})", figure=figures.tiers(main, res)),
            Section(f"Efficiency dashboard ({name})", figure=figures.dashboard(main, res)),
        ]
    out += [
        Section(f"Latency against resolution ({name})", figure=figures.latency(main)),
        Section(f"Peak memory against resolution ({name})", figure=figures.memory(main)),
    ]
    depth_rows = rows[(rows["dtype"] == dtype) & (rows["batch_size"] == batch)]
    depth_res = headline_resolution(depth_rows)
    if depth_res is not None and (fig := figures.depth(depth_rows, depth_res)) is not None:
        out.append(Section(f"Depth comparison ({name})", figure=fig))
    if res is not None:
        out.append(
            Section(
                f"Power and achieved TFLOP/s ({name})", figure=figures.power_and_tflops(main, res)
            )
        )
    out += [
        Section(
            f"Crossover resolutions ({name})",
            "The smallest measured resolution at which each mechanism has the higher throughput.",
            table=crossover(main),
        ),
        Section(
            f"The paper's numbers beside this run ({name})",
            "Paper: A100 40 GB, precision, batch, energy method and softmax kernel not "
            "stated. Measured: paper_4l rows of this run; empty where not measured.",
            table=claims(rows),
        ),
        Section(f"Every cell ({name})", table=cell_table(rows)),
        Section(f"Provenance ({name})", table=provenance(rows)),
    ]
    plt.close("all")
    return out


def _markdown_table(table: pd.DataFrame) -> str:
    def cell(value: object) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


def render(runs: dict[str, pd.DataFrame], out_dir: Path) -> tuple[Path, Path]:
    """Write report.md (+ PNGs) and a self-contained report.html into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sections: list[Section] = []
    if (side := comparison(runs)) is not None:
        sections.append(
            Section(
                "Runs side by side",
                "Throughput of every cell each run measured, and its ratio to the first run.",
                table=side,
            )
        )
    for name, rows in runs.items():
        sections += sections_for(name, rows)
    md = ["# attnbench report", ""]
    body = ["<h1>attnbench report</h1>"]
    for section in sections:
        md += [f"## {section.title}", ""]
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            md += [section.text, ""]
            body.append(f"<p>{html.escape(section.text)}</p>")
        if section.figure is not None:
            png = io.BytesIO()
            section.figure.savefig(png, format="png", dpi=90, bbox_inches="tight")
            # named by content, so two reports written at once never swap each other's figures
            name = f"figure_{hashlib.sha256(png.getvalue()).hexdigest()[:16]}.png"
            _atomic_bytes(out_dir / name, png.getvalue())
            md += [f"![{section.title}]({name})", ""]
            data = base64.b64encode(png.getvalue()).decode()
            body.append(
                f'<img alt="{html.escape(section.title)}" src="data:image/png;base64,{data}">'
            )
        if section.table is not None:
            md += [_markdown_table(section.table), ""]
            body.append(section.table.to_html(index=False, na_rep="", float_format="{:.4g}".format))
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    _atomic_text(md_path, "\n".join(md))
    style = (
        "body{font-family:sans-serif;max-width:1400px;margin:auto}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
        "padding:2px 6px}img{max-width:100%}"
    )
    _atomic_text(
        html_path,
        f"<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>attnbench report</title><style>{style}</style></head><body>"
        + "\n".join(body)
        + "</body></html>",
    )
    return md_path, html_path


def _atomic_bytes(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a mix, however many writers there are."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_text(path: Path, text: str) -> None:
    _atomic_bytes(path, text.encode())


def report_sweep(sweep_dir: Path, out_dir: Path | None = None) -> Path:
    """After a sweep: results.csv, the report, and a one-screen summary."""
    rows = collect(sweep_dir)
    name = read_plan(sweep_dir).get("sweep_name") or sweep_dir.name
    out_dir = out_dir or REPORTS / name
    _, html_path = render({sweep_dir.name: rows}, out_dir)
    counts = rows["status"].value_counts().to_dict()
    print(f"\n{len(rows)} cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    print(f"rows: {sweep_dir / RESULTS}\nreport: {html_path} (and report.md beside it)")
    return html_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attnbench-report", description=__doc__)
    parser.add_argument(
        "runs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="sweep directories (or results.csv files); several compare side by side",
    )
    parser.add_argument("--out", type=Path, help="report directory (default reports/<name>)")
    args = parser.parse_args(argv)
    runs: dict[str, pd.DataFrame] = {}
    for source in args.runs:
        try:
            frame = collect(source)
        except (OSError, ValueError) as err:
            print(f"attnbench-report: error: {err}", file=sys.stderr)
            return 2
        name = source.parent.name if source.is_file() else source.name
        while name in runs:
            name += "'"
        runs[name] = frame
        if source.is_dir():
            print(f"rows: {source / RESULTS} ({len(frame)} cells)")
    out = args.out or REPORTS / (next(iter(runs)) if len(runs) == 1 else "comparison")
    md, page = render(runs, out)
    print(f"report: {page} (and {md.name} beside it)")
    return 0
