"""`attnbench-report RUN_DIR... [--out DIR]`: a report (report.md, and report.html with its figures
embedded) re-drawing the paper's efficiency figures from measured rows. Given a sweep directory
it also (re)builds that sweep's results.csv from the job directories."""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from . import analysis, figures
from .rows import collect, write_atomic, write_results
from .sweep import read_plan

REPORTS = Path("reports")


# ---------------------------------------------------------------- rendering


@dataclass
class Section:
    title: str
    text: str = ""
    table: pd.DataFrame | None = None
    figure: Figure | None = None


def sections_for(name: str, rows: pd.DataFrame) -> list[Section]:
    main = analysis.main_slice(rows)
    model, dtype, batch, device = (
        main.iloc[0][k] for k in ("model", "dtype", "batch_size", "device")
    )
    res = analysis.headline_resolution(main)
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
    depth_res = analysis.headline_resolution(depth_rows)
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
            table=analysis.crossover(main),
        ),
        Section(
            f"The paper's numbers beside this run ({name})",
            "Paper: A100 40 GB, precision, batch, energy method and softmax kernel not "
            "stated. Measured: paper_4l rows of this run; empty where not measured.",
            table=analysis.claims(rows),
        ),
        Section(f"Every cell ({name})", table=analysis.cell_table(rows)),
        Section(f"Provenance ({name})", table=analysis.provenance(rows)),
    ]
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
    """Write report.md (+ PNGs) and a self-contained report.html into out_dir. Each run's rows
    are aggregated over trials first; a run of several revisions shows each as its own run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = {
        k: v for name, table in runs.items() for k, v in analysis.by_revision(name, table).items()
    }
    sections: list[Section] = []
    if (side := analysis.comparison(runs)) is not None:
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
            write_atomic(out_dir / name, png.getvalue())
            md += [f"![{section.title}]({name})", ""]
            data = base64.b64encode(png.getvalue()).decode()
            body.append(
                f'<img alt="{html.escape(section.title)}" src="data:image/png;base64,{data}">'
            )
        if section.table is not None:
            md += [_markdown_table(section.table), ""]
            body.append(section.table.to_html(index=False, na_rep="", float_format="{:.4g}".format))
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_atomic(md_path, "\n".join(md).encode())
    style = (
        "body{font-family:sans-serif;max-width:1400px;margin:auto}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
        "padding:2px 6px}img{max-width:100%}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>attnbench report</title><style>{style}</style></head><body>"
        + "\n".join(body)
        + "</body></html>"
    )
    write_atomic(html_path, page.encode())
    return md_path, html_path


def render_sweep(sweep_dir: Path, table: pd.DataFrame, name: str | None = None) -> Path:
    """A finished sweep's report, in reports/<sweep name>/."""
    name = name or read_plan(sweep_dir).get("sweep_name") or sweep_dir.name
    _, page = render({sweep_dir.name: table}, REPORTS / name)
    return page


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
            if source.is_dir():
                path, table = write_results(source)
                print(f"rows: {path} ({len(table)} cells)")
            else:
                table = collect(source)
        except (OSError, ValueError) as err:
            print(f"attnbench-report: error: {err}", file=sys.stderr)
            return 2
        name = source.parent.name if source.is_file() else source.name
        while name in runs:
            name += "'"
        runs[name] = table
    out = args.out or REPORTS / (next(iter(runs)) if len(runs) == 1 else "comparison")
    md, page = render(runs, out)
    print(f"report: {page} (and {md.name} beside it)")
    return 0
