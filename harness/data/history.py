"""The performance history: every run that is added, kept, in a directory anyone can read.

    STORE/runs/<time>-<commit>-<machine>-<random>.csv   one file per run, never rewritten
    STORE/acknowledged/<commit>-<random>.yaml           a known change that stops failing
    STORE/.cache.pkl                                    derived, rebuilt from the runs at will

A run file is plain CSV (pandas, a spreadsheet or DuckDB read it as it is): one line per cell
of the run with the run's key (commit, time, machine, settings), the cell's identity columns
(rows.IDENTITY, so series never mix cells), and per gated metric its value over the run's
trusted trials, a 95% interval of that value, and the per-trial values themselves. Adding is
a new file under a name nobody else can pick (a random part) written atomically, so two CI
jobs adding at once both land. Reading lists the directory and reads only files the cache
has not seen, so thousands of runs load in well under a second; a file that cannot be read is
reported by name and the others are still read.
"""

from __future__ import annotations

import contextlib
import json
import math
import pickle
import re
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from harness.data import rows as schema

RUNS = "runs"
ACKS = "acknowledged"
CACHE = ".cache.pkl"
KEY = ("run", "commit", "time", "machine", "settings")  # what a run is known by
METRICS = tuple(
    name for name, c in schema.GATED.items() if c.gate is not None and c.gate.how == "ratio"
)
LEVEL_T = 0.975  # a two-sided 95% interval of a run's value over its trials
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class HistoryError(ValueError):
    """Input the history cannot take (named), or a store it cannot read at all."""


@dataclass
class Loaded:
    """The store's cells (one line per run and cell) and the files that could not be read."""

    cells: pd.DataFrame
    problems: list[str] = field(default_factory=list)


def _slug(text: str, width: int) -> str:
    return (_SAFE.sub("-", text).strip("-") or "unknown")[:width]


def summarise(
    rows: pd.DataFrame, commit: str, when: str, machine: str, settings: str
) -> pd.DataFrame:
    """One line per cell: its identity, the run's key, and per metric the value over trusted
    trials (median), its interval (t on the logs of the trials' values) and those values. A
    cell with no trusted trial keeps its values but is marked `trusted` false: drawn, never
    deciding."""
    run = f"{when.replace(':', '')}-{_slug(commit, 12)}-{_slug(machine, 24)}-{secrets.token_hex(4)}"
    ok = rows[rows["status"] == "ok"].copy()
    if ok.empty:
        raise HistoryError("the run has no ok row: nothing to add")
    ok["_cell"] = ok.apply(schema.identity, axis=1)
    out = []
    for _, group in ok.groupby("_cell", sort=False):
        first = group.iloc[0]
        valid = group.get("timing_valid", pd.Series(True, index=group.index)).map(schema.truth)
        trusted = group[valid.astype(bool)]
        line: dict[str, Any] = {
            "run": run,
            "commit": commit,
            "time": when,
            "machine": machine,
            "settings": settings,
            **{c: first.get(c) for c in schema.IDENTITY},
            "trials": len(group),
            "trusted": bool(len(trusted)),
        }
        use = trusted if len(trusted) else group
        for metric in METRICS:
            values = (
                pd.to_numeric(use.get(metric), errors="coerce").dropna() if metric in use else []
            )
            values = [float(v) for v in values if v > 0]
            line[metric], line[f"{metric}_lo"], line[f"{metric}_hi"] = _interval(values)
            line[f"{metric}_trials"] = json.dumps([round(v, 9) for v in values]) if values else ""
        out.append(line)
    return pd.DataFrame(out)


def _interval(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """The median of the trials' values and a 95% t interval of their geometric mean
    (one trial: no interval)."""
    if not values:
        return None, None, None
    point = float(np.median(values))
    if len(values) < 2:
        return point, None, None
    from scipy.stats import t

    logs = np.log(values)
    half = float(t.ppf(LEVEL_T, len(logs) - 1)) * float(logs.std(ddof=1)) / math.sqrt(len(logs))
    centre = float(logs.mean())
    return point, float(np.exp(centre - half)), float(np.exp(centre + half))


def run_key(
    rows: pd.DataFrame, commit: str | None, when: str | None, machine: str | None
) -> tuple[str, str, str]:
    """The run's commit, time and machine: given, or read from its rows (the revision it
    measured, else attnbench's own checkout; the earliest row's time; host and CPU or GPU)."""
    if commit is None:
        revisions = sorted(
            {str(r) for r in rows.get("revision", pd.Series(dtype=str)).dropna() if str(r)}
        )
        shas = sorted(
            {str(r) for r in rows.get("git_sha", pd.Series(dtype=str)).dropna() if str(r)}
        )
        found = revisions or shas
        if len(found) != 1:
            raise HistoryError(
                f"the rows name {len(found)} commits ({', '.join(found) or 'none'}): "
                "give --commit (and --revision to pick one side of an A/B)"
            )
        commit = found[0]
    if when is None:
        stamps = pd.to_datetime(rows.get("timestamp"), errors="coerce", utc=True).dropna()
        moment = stamps.min() if len(stamps) else datetime.now(timezone.utc)
        when = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if machine is None:
        first = rows.iloc[0]
        host = first.get("hostname") or socket.gethostname()
        device = (
            first.get("device_name")
            if str(first.get("device", "")).startswith("cuda")
            else first.get("cpu_model")
        )
        machine = f"{host} ({device})" if isinstance(device, str) and device else str(host)
    return str(commit), str(when), str(machine)


PER_JOB = {*schema.IDENTITY, *schema.SAMPLE}  # overrides that name the cell, not the run


def settings_of(rows: pd.DataFrame) -> str:
    """How the run was measured, in words: its first job's overrides less those naming the
    cell (the cell is in the identity columns already)."""
    given = (
        str(rows["overrides"].dropna().iloc[0])
        if "overrides" in rows and rows["overrides"].notna().any()
        else ""
    )
    kept = [o for o in given.split() if o.split("=", 1)[0].lstrip("+~") not in PER_JOB]
    return " ".join(kept)


def add(store: Path, cells: pd.DataFrame) -> Path:
    """A run's summary as a new file of the store (never an existing one)."""
    run = str(cells["run"].iloc[0])
    target = store / RUNS / f"{run}.csv"
    if target.exists():
        raise HistoryError(f"{target} exists: a run is added once")
    return schema.write_atomic(target, cells.to_csv(index=False).encode())


def _read_run(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=str)
    missing = [c for c in (*KEY, "attention", "trusted") if c not in table]
    if missing:
        raise HistoryError(f"not a history run file: no column {', '.join(missing)}")
    if table.empty:
        raise HistoryError("no cells")
    for metric in METRICS:
        for column in (metric, f"{metric}_lo", f"{metric}_hi"):
            if column in table:
                table[column] = pd.to_numeric(table[column], errors="coerce")
    for name in (
        "resolution",
        "height",
        "batch_size",
        "depth",
        "dim",
        "heads",
        "patch_size",
        "threads",
        "trials",
    ):
        if name in table:
            table[name] = pd.to_numeric(table[name], errors="coerce")
    table["trusted"] = table["trusted"].map(schema.truth)
    return table


def load(store: Path) -> Loaded:
    """Every run of the store (from the cache where it has them), and what could not be read."""
    folder = store / RUNS
    if not folder.is_dir():
        raise HistoryError(
            f"{store} is not a history store (no {RUNS}/ directory); add a run first"
        )
    files = {p.name: p.stat().st_size for p in folder.glob("*.csv")}
    cache_path = store / CACHE
    frames: dict[str, pd.DataFrame] = {}
    seen: dict[str, int] = {}
    try:
        with cache_path.open("rb") as handle:
            cached = pickle.load(handle)
        seen = {k: v for k, v in cached["files"].items() if files.get(k) == v}
        table = cached["cells"]
        if seen:
            kept = table[table["_file"].isin(list(seen))]
            frames["cache"] = kept
    except (OSError, pickle.UnpicklingError, KeyError, EOFError, AttributeError, ValueError):
        seen = {}
    problems = []
    fresh = []
    for name, size in sorted(files.items()):
        if name in seen:
            continue
        try:
            part = _read_run(folder / name).assign(_file=name)
            part["cell"] = [schema.identity(line) for line in part.to_dict("records")]
            fresh.append(part)
            seen[name] = size
        except (OSError, ValueError, pd.errors.ParserError) as err:
            problems.append(f"{folder / name}: {err}")
    parts = [f for f in (*frames.values(), *fresh) if not f.empty]
    empty = pd.DataFrame(columns=[*KEY, "_file", "cell"])
    cells = pd.concat(parts, ignore_index=True) if parts else empty
    if fresh:
        with contextlib.suppress(OSError):  # a read-only store is still read
            schema.write_atomic(cache_path, pickle.dumps({"files": seen, "cells": cells}))
    if "cell" not in cells:
        cells["cell"] = pd.Series(dtype=str)
    cells = cells.sort_values(["time", "run"], kind="stable", ignore_index=True)
    return Loaded(cells, problems)


def acknowledge(
    store: Path, commit: str, reason: str, cell: str | None, metric: str | None
) -> Path:
    """A file naming a known change (a commit, optionally one cell's words or one metric):
    a change point it matches no longer fails the check."""
    if metric is not None and metric not in METRICS:
        raise HistoryError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    entry = {"commit": commit, "reason": reason, "cell": cell, "metric": metric}
    target = store / ACKS / f"{_slug(commit, 12)}-{secrets.token_hex(4)}.yaml"
    return schema.write_atomic(target, yaml.safe_dump(entry, sort_keys=False).encode())


def acknowledged(store: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The store's acknowledgements, and the files that could not be read."""
    found, problems = [], []
    for path in sorted((store / ACKS).glob("*.yaml")):
        try:
            entry = yaml.safe_load(path.read_text())
            if not isinstance(entry, dict) or not entry.get("commit"):
                raise ValueError("no commit named")
            found.append(entry)
        except (OSError, ValueError, yaml.YAMLError) as err:
            problems.append(f"{path}: {err}")
    return found, problems
