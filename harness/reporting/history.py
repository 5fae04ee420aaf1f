"""`attnbench-history`: every run kept, change points found, a page that shows when and by
which commit.

    attnbench-history add RUN_DIR_OR_CSV... --store DIR [--commit SHA] [--revision SHA]
    attnbench-history check --store DIR [--min-change 0.02]
    attnbench-history report --store DIR --out DIR
    attnbench-history ack --store DIR --commit SHA --reason TEXT [--cell WORDS] [--metric M]

The store is harness.data.history; the method harness.reporting.changepoints (E-divisive means
with a t-test, as Apache Otava). A series is one cell on one machine and one metric, in the
order the runs were measured; cells whose timing was flagged untrustworthy in every trial of a
run are drawn but never decide. `check` fails (exit 1) while a series' latest change point is
a regression nobody has acknowledged (`ack` writes the file that does); 2 when a file of the
store could not be read (named; the rest are still read) or the input is unusable; 0 otherwise.
"""

from __future__ import annotations

import argparse
import html
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from harness import paths
from harness.data import history
from harness.data import rows as schema
from harness.reporting import changepoints
from harness.reporting.page import SCRIPT, STYLE, html_table

EXIT_OK, EXIT_REGRESSED, EXIT_UNUSABLE = 0, 1, 2
MIN_CHANGE = 0.02  # a change point smaller than this (relative) is not reported
HIGHER_IS_BETTER = {
    name: bool(c.gate.higher_is_better) for name, c in schema.GATED.items() if c.gate is not None
}


def series(cells: pd.DataFrame) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(machine, cell words, metric, its runs in order) for every series in the store."""
    out = []
    for (machine, _), group in cells.groupby(["machine", "cell"], sort=False):
        words = schema.cell_words(group.iloc[0])
        for metric in history.METRICS:
            if metric in group and group[metric].notna().any():
                out.append((str(machine), words, metric, group[group[metric].notna()]))
    return out


def changes(
    cells: pd.DataFrame, acks: list[dict[str, Any]], min_change: float = MIN_CHANGE
) -> pd.DataFrame:
    """Every change point of every series, named: where (the first run after it: its commit
    and time), how big (ratio after / before with its interval), which way, and whether it
    fails the check (the series' latest, a regression, not acknowledged)."""
    found = []
    for machine, words, metric, runs in series(cells):
        trusted = runs[runs["trusted"].astype(bool)]
        if len(trusted) < 2 * changepoints.MIN_SIZE:
            continue
        points = [
            c
            for c in changepoints.find(trusted[metric].to_list())
            if abs(math.log(c.ratio)) >= math.log1p(min_change)
        ]
        for k, change in enumerate(points):
            at = trusted.iloc[change.index]
            worse = change.ratio < 1 if HIGHER_IS_BETTER[metric] else change.ratio > 1
            kind = "regression" if worse else "improvement"
            known = any(_matches(a, str(at["commit"]), words, metric) for a in acks)
            latest = k == len(points) - 1
            state = (
                "acknowledged"
                if known
                else "failing"
                if kind == "regression" and latest
                else "superseded"
                if kind == "regression"
                else ""
            )
            found.append(
                {
                    "cell": words,
                    "metric": metric,
                    "machine": machine,
                    "commit": str(at["commit"]),
                    "time": str(at["time"]),
                    "run": int(change.index),
                    "ratio": change.ratio,
                    "interval": f"{change.lo:.3g}..{change.hi:.3g}",
                    "p": change.p,
                    "kind": kind,
                    "state": state,
                }
            )
    columns = ["cell", "metric", "machine", "commit", "time", "run", "ratio", "interval", "p"]
    return pd.DataFrame(found, columns=[*columns, "kind", "state"])


def _matches(ack: dict[str, Any], commit: str, words: str, metric: str) -> bool:
    named = str(ack.get("commit", ""))
    same_commit = bool(named) and (commit.startswith(named) or named.startswith(commit))
    return (
        same_commit
        and ack.get("cell") in (None, "", words)
        and ack.get("metric") in (None, "", metric)
    )


# ---------------------------------------------------------------- commands


def cmd_add(args: argparse.Namespace) -> int:
    for source in args.runs:
        try:
            rows = schema.collect(Path(source))
        except (OSError, ValueError, pd.errors.ParserError) as err:
            raise history.HistoryError(f"{source}: {err}") from None
        if args.revision:
            rows = rows[rows["revision"].astype(str).str.startswith(args.revision[:12])]
            if rows.empty:
                raise history.HistoryError(f"{source}: no row of revision {args.revision}")
        elif "revision" in rows and rows["revision"].dropna().astype(str).str.len().gt(0).any():
            plan = [r["sha"] for r in _plan(Path(source)).get("revisions", [])]
            if len(plan) > 1:  # an A/B: the change, the last revision given
                rows = rows[rows["revision"].astype(str) == plan[-1]]
        commit, when, machine = history.run_key(rows, args.commit, args.time, args.machine)
        settings = args.settings or history.settings_of(rows)
        cells = history.summarise(rows, commit, when, machine, settings)
        path = history.add(args.store, cells)
        print(
            f"attnbench-history: added {len(cells)} cells of {commit} ({when}, {machine}): {path}"
        )
    return EXIT_OK


def _plan(source: Path) -> dict[str, Any]:
    from harness.data.store import RunStore

    return RunStore(source).plan if source.is_dir() else {}


def _load(store: Path) -> tuple[pd.DataFrame, list[dict[str, Any]], list[str]]:
    loaded = history.load(store)
    acks, bad_acks = history.acknowledged(store)
    problems = loaded.problems + bad_acks
    for problem in problems:
        print(f"attnbench-history: unreadable, left out: {problem}", file=sys.stderr)
    return loaded.cells, acks, problems


def cmd_check(args: argparse.Namespace) -> int:
    cells, acks, problems = _load(args.store)
    found = changes(cells, acks, args.min_change)
    runs = cells["run"].nunique() if not cells.empty else 0
    if not found.empty:
        with pd.option_context("display.width", 250, "display.max_rows", None):
            print(found.to_string(index=False, float_format="{:.4g}".format))
    failing = found[found["state"] == "failing"]
    said = f"{runs} runs, {len(series(cells))} series, {len(found)} change points"
    if not failing.empty:
        named = "; ".join(
            f"{r.cell} {r.metric} on {r.machine}: {r.ratio:.3f}x at {r.commit[:12]}"
            for r in failing.itertuples()
        )
        print(
            f"attnbench-history: REGRESSION ({said}): {named}; acknowledge a known one with "
            "attnbench-history ack --commit SHA --reason TEXT"
        )
        return EXIT_REGRESSED
    if problems:
        print(f"attnbench-history: {len(problems)} unreadable files left out ({said})")
        return EXIT_UNUSABLE
    print(f"attnbench-history: OK ({said}), no unacknowledged regression")
    return EXIT_OK


def cmd_ack(args: argparse.Namespace) -> int:
    path = history.acknowledge(args.store, args.commit, args.reason, args.cell, args.metric)
    print(f"attnbench-history: acknowledged {args.commit}: {path}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    cells, acks, problems = _load(args.store)
    found = changes(cells, acks, args.min_change)
    page = render(cells, found, problems, args.min_change)
    out = args.out / "history.html"
    schema.write_atomic(out, page.encode())
    print(f"attnbench-history: {out}")
    return EXIT_UNUSABLE if problems else EXIT_OK


# ---------------------------------------------------------------- the page

W, H, PAD = 360, 150, 34


def chart(runs: pd.DataFrame, metric: str, marks: pd.DataFrame, title: str) -> str:
    """One series as an inline SVG: values (untrusted ones hollow and grey), their intervals as
    a band, change points as labelled lines."""
    values = runs[metric].astype(float)
    lo = runs.get(f"{metric}_lo", values).astype(float).fillna(values)
    hi = runs.get(f"{metric}_hi", values).astype(float).fillna(values)
    top, bottom = float(hi.max()), float(lo.min())
    span = (top - bottom) or abs(top) or 1.0
    n = len(runs)

    def x(i: int) -> float:
        return PAD + (W - PAD - 8) * (i / max(n - 1, 1))

    def y(v: float) -> float:
        return 16 + (H - 36) * (1 - (v - bottom) / span)

    band = (
        " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(hi))
        + " "
        + " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in reversed(list(enumerate(lo))))
    )
    line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
    dots = "".join(
        f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="1.8" class="{"ok" if t else "untrusted"}"/>'
        for i, (v, t) in enumerate(zip(values, runs["trusted"].astype(bool), strict=True))
    )
    position = {run: i for i, run in enumerate(runs["run"])}
    lines = []
    for mark in marks.itertuples():
        match = runs.index[(runs["commit"] == mark.commit) & (runs["time"] == mark.time)]
        if not len(match):
            continue
        i = position[runs.loc[match[0], "run"]]
        colour = "regression" if mark.kind == "regression" else "improvement"
        lines.append(
            f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="12" y2="{H - 20}" class="{colour}"/>'
            f'<text x="{x(i) + 2:.1f}" y="11" class="{colour}">'
            f"{html.escape(mark.commit[:8])} {mark.ratio:.3f}x</text>"
        )
    return (
        f'<figure class="series"><figcaption>{html.escape(title)}</figcaption>'
        f'<svg class="chart" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        f'role="img" aria-label="{html.escape(title)}">'
        f'<polygon points="{band}" class="band"/><polyline points="{line}" class="line"/>{dots}'
        f"{''.join(lines)}"
        f'<text x="2" y="{y(top) + 4:.1f}" class="axis">{top:.4g}</text>'
        f'<text x="2" y="{y(bottom):.1f}" class="axis">{bottom:.4g}</text>'
        f'<text x="{PAD}" y="{H - 4}" class="axis">run 1</text>'
        f'<text x="{W - 60}" y="{H - 4}" class="axis">run {n}</text></svg></figure>'
    )


CHART_STYLE = """
figure.series { display: inline-block; margin: 4px 8px 8px 0; }
figure.series figcaption { font-size: 12px; }
svg.chart { background: #fff; border: 1px solid #ddd; }
svg .band { fill: #c6dbef; stroke: none; opacity: 0.7; }
svg .line { fill: none; stroke: #3182bd; stroke-width: 1; }
svg .ok { fill: #08519c; } svg .untrusted { fill: none; stroke: #999; }
svg line.regression { stroke: #cb181d; stroke-dasharray: 3 2; }
svg line.improvement { stroke: #238b45; stroke-dasharray: 3 2; }
svg text { font-size: 10px; } svg text.regression { fill: #cb181d; }
svg text.improvement { fill: #238b45; } svg text.axis { fill: #555; }
"""


def render(
    cells: pd.DataFrame, found: pd.DataFrame, problems: list[str], min_change: float = MIN_CHANGE
) -> str:
    """The self-contained page: the change points first, then every series."""
    runs = cells["run"].nunique() if not cells.empty else 0
    body = [
        "<h1>attnbench performance history</h1>",
        f"<p>{runs} runs, {len(found)} change points (E-divisive means with a t-test, p at most "
        f"{changepoints.MAX_P}; smaller than {min_change:.0%} not shown). Each chart is one "
        "cell on one machine over its runs in order; the band is each run's 95% interval over "
        "its trials; hollow grey points had untrustworthy timing and never decide.</p>",
    ]
    if problems:
        body.append(
            "<p><b>Unreadable files, left out:</b></p><ul>"
            + "".join(f"<li>{html.escape(p)}</li>" for p in problems)
            + "</ul>"
        )
    body.append("<h2>Change points</h2>")
    if found.empty:
        body.append("<p>No change point found.</p>")
    else:
        shown = found.assign(
            ratio=found["ratio"].map("{:.3f}".format), p=found["p"].map("{:.2g}".format)
        )
        body.append(html_table(shown, "changes"))
    body.append("<h2>Series</h2>")
    for machine, words, metric, part in series(cells):
        marks = found[
            (found["cell"] == words) & (found["metric"] == metric) & (found["machine"] == machine)
        ]
        body.append(chart(part, metric, marks, f"{words} · {metric} · {machine}"))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>attnbench history</title>"
        f"<style>{STYLE}{CHART_STYLE}</style></head><body>"
        + "\n".join(body)
        + f"<script>{SCRIPT}</script></body></html>"
    )


# ---------------------------------------------------------------- command line


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="attnbench-history",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"attnbench {paths.version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add runs (run directories or results.csv) to the store")
    add.add_argument("runs", nargs="+", help="run directories or results.csv files")
    add.add_argument("--commit", help="the commit the run measured (default: from its rows)")
    add.add_argument("--revision", help="in an A/B run, the side to add (default: the last)")
    add.add_argument("--time", help="when it ran, ISO 8601 (default: its first row's time)")
    add.add_argument("--machine", help="where it ran (default: host and CPU or GPU, from rows)")
    add.add_argument("--settings", help="how it ran, in words (default: its overrides)")
    check = sub.add_parser("check", help="find change points; fail on an unacknowledged one")
    report = sub.add_parser("report", help="write history.html")
    report.add_argument("--out", type=Path, required=True)
    ack = sub.add_parser("ack", help="acknowledge a known change: it stops failing")
    ack.add_argument("--commit", required=True)
    ack.add_argument("--reason", required=True)
    ack.add_argument("--cell", help="only this cell (its words as check prints them)")
    ack.add_argument("--metric", help=f"only this metric: {', '.join(history.METRICS)}")
    for command in (add, check, report, ack):
        command.add_argument("--store", type=Path, required=True, help="the history directory")
    for command in (check, report):
        command.add_argument("--min-change", type=float, default=MIN_CHANGE)
    return parser.parse_args(argv)


COMMANDS = {"add": cmd_add, "check": cmd_check, "report": cmd_report, "ack": cmd_ack}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        return COMMANDS[args.command](args)
    except history.HistoryError as err:
        print(f"attnbench-history: {err}", file=sys.stderr)
        return EXIT_UNUSABLE


if __name__ == "__main__":
    sys.exit(main())
