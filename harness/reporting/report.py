"""`attnbench-report RUN_DIR... [--out DIR]`: the report a reviewer reads. report.html is one
self-contained page (figures embedded, styles and the cell table's sorting and filtering inline,
nothing fetched): a summary with the first findings, the paper's figures re-drawn from the
measured cells, measured scaling against claimed complexity, crossovers, the paper's claims where
this run can speak to them, every cell, provenance. report.md (figures as PNG files beside it)
holds the same. Given a sweep directory it also (re)builds that sweep's results.csv.

    attnbench-report RUN_DIR [RUN_DIR_OR_CSV ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import attention_zoo as zoo
from harness import paths
from harness.data.rows import STOPPED, collect, write_atomic, write_results
from harness.data.store import RunStore
from harness.reporting import analysis, figures
from harness.reporting.page import SCRIPT, STYLE, fmt, html_table

REPORTS = paths.REPORTS


@dataclass
class Section:
    title: str
    text: str = ""
    table: pd.DataFrame | None = None
    figure: Figure | None = None
    bullets: list[str] = field(default_factory=list)
    table_id: str = ""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# ---------------------------------------------------------------- content


def summary(name: str, rows: pd.DataFrame, cells: pd.DataFrame) -> Section:
    """What ran, where, how long, how it went, and the findings a reviewer wants first."""
    counts = cells["status"].value_counts().to_dict()
    ok = cells[cells["status"] == "ok"]
    bad = int(analysis.untrusted(ok).sum())
    devices = ", ".join(
        sorted(set(rows.get("device_name", pd.Series(dtype=str)).dropna().astype(str)))
    )
    times = rows["timestamp"].dropna().astype(str) if "timestamp" in rows else pd.Series(dtype=str)
    spent = analysis.numeric(rows, "harness_s").sum()
    bullets = [
        f"What ran: {len(cells)} cells"
        + (f" ({len(rows)} measurements over trials)" if len(rows) > len(cells) else "")
        + f" of {cells['attention'].nunique()} mechanisms, "
        f"{', '.join(sorted(set(cells['model'])))}, "
        f"{analysis._span(sorted(set(cells['resolution'])))}, modes "
        f"{', '.join(sorted(set(cells['mode'])))}, {', '.join(sorted(set(cells['dtype'])))}.",
        f"Where: {devices or 'unknown device'}; when: "
        f"{times.min() if len(times) else '?'} to {times.max() if len(times) else '?'}; "
        f"measuring took {spent / 60:.1f} min of cell time.",
        "How it went: "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        + f"; {bad} of {len(ok)} ok cells have untrustworthy timing"
        + (" (marked in every figure and table)." if bad else "."),
    ]
    bullets += [f"Finding: {f}" for f in findings(cells)]
    return Section(f"Summary ({name})", bullets=bullets)


def findings(cells: pd.DataFrame) -> list[str]:
    """Up to three: the headline speed-ups, where the quadratic baselines stop, measured scaling
    of Linear-InfSA against its claim."""
    out = []
    res = analysis.headline_resolution(cells)
    if res is not None:
        at = cells[
            (cells["resolution"] == res) & (cells["mode"] == "infer") & (cells["status"] == "ok")
        ]
        at = at.drop_duplicates("attention").set_index("attention")
        if not at.empty:
            best = at["throughput_img_s"].idxmax()
            parts = []
            for base in zoo.with_role("reference"):
                if base in at.index and best != base:
                    ratio = at.loc[best, "throughput_img_s"] / at.loc[base, "throughput_img_s"]
                    lo = at.loc[best].get("throughput_lo", np.nan) / at.loc[base].get(
                        "throughput_hi", np.nan
                    )
                    hi = at.loc[best].get("throughput_hi", np.nan) / at.loc[base].get(
                        "throughput_lo", np.nan
                    )
                    parts.append(
                        f"{ratio:.2f}x {base}"
                        + (f" ({lo:.2f}-{hi:.2f})" if np.isfinite(lo) else "")
                    )
            out.append(
                f"fastest at {res}² (inference): {best}, "
                f"{at.loc[best, 'throughput_img_s']:.3g} img/s"
                + (f", {', '.join(parts)}" if parts else "")
            )
    stops = []
    quadratic = [n for n in zoo.available() if zoo.info(n).tier == next(iter(zoo.TIERS))]
    for name in quadratic:
        mine = cells[(cells["attention"] == name) & (cells["mode"] == "infer")]
        failed = mine[mine["status"].isin(STOPPED)]
        if not failed.empty:
            stops.append(
                f"{name} stopped at {int(failed['resolution'].min())}² ({failed.iloc[0]['status']})"
            )
    if stops:
        out.append("; ".join(stops))
    fits = analysis.scaling(cells)
    star = fits[fits["mechanism"].isin(zoo.with_role("highlight"))] if not fits.empty else fits
    sentences = analysis.scaling_sentences(star if not star.empty else fits.head(1))
    if sentences:
        out.append(sentences[0])
    return out[:3]


def sections_for(name: str, rows: pd.DataFrame, cells: pd.DataFrame) -> list[Section]:
    main = analysis.main_slice(cells)
    model, dtype, batch, device = (
        main.iloc[0][k] for k in ("model", "dtype", "batch_size", "device")
    )
    res = analysis.headline_resolution(main)
    out = [summary(name, rows, cells)]
    slice_text = (
        f"Figures show {model}, {dtype}, batch {batch}, {device}; error bars are 95% intervals "
        "over trials, or the window's p10-p90 where there was one trial."
    )
    if res is not None:
        out += [
            Section(f"Complexity tiers ({name})", slice_text, figure=figures.tiers(main, res)),
            Section(f"Efficiency dashboard ({name})", figure=figures.dashboard(main, res)),
        ]
    out += [
        Section(f"Latency against resolution ({name})", figure=figures.latency(main)),
        Section(f"Peak memory against resolution ({name})", figure=figures.memory(main)),
    ]
    depth_cells = cells[(cells["dtype"] == dtype) & (cells["batch_size"] == batch)]
    depth_res = analysis.headline_resolution(depth_cells)
    if depth_res is not None and (fig := figures.depth(depth_cells, depth_res)) is not None:
        out.append(Section(f"Depth comparison ({name})", figure=fig))
    if res is not None:
        out.append(Section(f"Arithmetic rate ({name})", figure=figures.arithmetic_rate(main, res)))
    fits = analysis.scaling(main)
    out.append(
        Section(
            f"Measured scaling against claimed complexity ({name})",
            "Exponent k of a least-squares fit of log(latency per image) and log(peak memory) "
            "against log(tokens), over the sizes measured. Fixed costs (the MLP, the patch "
            "embedding, overheads) pull exponents below the attention's tier at small sizes.",
            table=fits if not fits.empty else None,
            bullets=analysis.scaling_sentences(fits)
            or ["fewer than three sizes per mechanism: no fit"],
        )
    )
    out.append(
        Section(
            f"Crossovers ({name})",
            "From which measured size on each mechanism is faster than softmax and sdpa at every "
            "larger measured size, the throughput ratio there with its interval, and whether that "
            "margin is outside the noise.",
            table=analysis.crossover(main),
        )
    )
    claims, missing = analysis.claims(cells)
    out.append(
        Section(
            f"The paper's claims beside this run ({name})",
            "The paper (A100 40 GB; precision, batch, energy method and softmax kernel not "
            "stated). Ratios are compared on any hardware, absolute numbers only on the paper's.",
            table=claims if not claims.empty else None,
            bullets=[f"not comparable here: {m}" for m in missing],
        )
    )
    out += [
        Section(
            f"Every cell ({name})",
            "Sort by a column by clicking its header; type to filter.",
            table=analysis.cell_table(cells),
            table_id="cells",
        ),
        Section(f"Provenance ({name})", table=analysis.provenance(rows)),
    ]
    return out


def environment(name: str, run_dir: Path) -> list[Section]:
    """The attnbench-doctor findings a sweep stored beside its rows, as a section."""
    found = RunStore(run_dir).doctor()
    if found is None:
        return []
    return [
        Section(
            f"Measurement environment ({name})",
            f"attnbench-doctor at the sweep's start: {found['verdict']}.",
            table=pd.DataFrame(found["findings"]),
            bullets=[f"not seen: {item}" for item in found.get("not_seen", [])],
        )
    ]


# ---------------------------------------------------------------- rendering


def _markdown_table(table: pd.DataFrame) -> str:
    def cell(value: object) -> str:
        return fmt(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


def render(
    runs: dict[str, pd.DataFrame], out_dir: Path, extra: list[Section] | None = None
) -> tuple[Path, Path]:
    """Write report.md (+ PNGs) and a self-contained report.html into out_dir. Each run's rows
    are aggregated over trials first; a run of several revisions shows each as its own run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    expanded = {
        label: (part, analysis.aggregate(part))
        for name, rows in runs.items()
        for label, part in analysis.by_revision(name, rows).items()
    }
    sections: list[Section] = []
    if (side := analysis.comparison({k: cells for k, (_, cells) in expanded.items()})) is not None:
        sections.append(
            Section(
                "Runs side by side",
                "Throughput (median over trials) of every "
                "cell the runs measured, and its ratio to the first run.",
                table=side,
            )
        )
    for name, (rows, cells) in expanded.items():
        sections += sections_for(name, rows, cells)
    sections += extra or []
    md = ["# attnbench report", ""]
    toc = "".join(
        f'<li><a href="#{_slug(s.title)}">{html.escape(s.title)}</a></li>' for s in sections
    )
    body = ["<h1>attnbench report</h1>", f"<nav><b>Contents</b><ul>{toc}</ul></nav>"]
    for section in sections:
        md += [f"## {section.title}", ""]
        body.append(f'<h2 id="{_slug(section.title)}">{html.escape(section.title)}</h2>')
        if section.text:
            md += [section.text, ""]
            body.append(f"<p>{html.escape(section.text)}</p>")
        if section.bullets:
            md += [f"- {b}" for b in section.bullets] + [""]
            body.append(
                '<ul class="bullets">'
                + "".join(f"<li>{html.escape(b)}</li>" for b in section.bullets)
                + "</ul>"
            )
        if section.figure is not None:
            png = io.BytesIO()
            section.figure.savefig(png, format="png", dpi=90)
            # named by content, so two reports written at once never swap each other's figures
            name = f"figure_{hashlib.sha256(png.getvalue()).hexdigest()[:16]}.png"
            write_atomic(out_dir / name, png.getvalue())
            md += [f"![{section.title}]({name})", ""]
            data = base64.b64encode(png.getvalue()).decode()
            body.append(
                f'<img alt="{html.escape(section.title)}" src="data:image/png;base64,{data}">'
            )
        if section.table is not None and not section.table.empty:
            md += [_markdown_table(section.table), ""]
            body.append(html_table(section.table, section.table_id))
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_atomic(md_path, "\n".join(md).encode())
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>attnbench report</title>"
        f"<style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + f"<script>{SCRIPT}</script></body></html>"
    )
    write_atomic(html_path, page.encode())
    return md_path, html_path


def render_sweep(sweep_dir: Path, table: pd.DataFrame, name: str | None = None) -> Path:
    """A finished sweep's report, in reports/<sweep name>/."""
    name = name or RunStore(sweep_dir).plan.get("sweep_name") or sweep_dir.name
    _, page = render(
        {sweep_dir.name: table}, REPORTS / name, environment(sweep_dir.name, sweep_dir)
    )
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="attnbench-report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"attnbench {paths.version()}")
    parser.add_argument(
        "runs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="sweep or single-cell run directories (result.json files at any "
        "depth) or results.csv files; several compare side by side",
    )
    parser.add_argument("--out", type=Path, help="report directory (default reports/<name>)")
    args = parser.parse_args(argv)
    runs: dict[str, pd.DataFrame] = {}
    extra: list[Section] = []
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
        extra += environment(name, source if source.is_dir() else source.parent)
    out = args.out or REPORTS / (next(iter(runs)) if len(runs) == 1 else "comparison")
    md, page = render(runs, out, extra)
    print(f"report: {page} (and {md.name} beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
