"""A sweep is a Hydra multirun over cells. This module plans it (how many cells, for progress),
and lets each job see its siblings' rows: to resume, and to skip what is sure to run out of
memory. It relies only on the rows in the job directories, never on end-of-run callbacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .rows import ROW_FILE, read_row, write_json

PLAN_FILE = "sweep.json"
last_sweep_dir: Path | None = None  # set in the launching process, read by harness.app.main
DONE = {"ok", "oom", "skipped_oom"}  # statuses a re-run keeps; `error` cells are measured again


def plan_overrides(config: DictConfig) -> list[list[str]]:
    """Every job's overrides, as Hydra's basic sweeper will enumerate them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.to_container(config.hydra.sweeper.get("params") or {}, resolve=False)
    wanted = [f"{key}={value}" for key, value in params.items()]
    wanted += list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(wanted)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


class SweepPlan(Callback):
    """Writes sweep.json (name, size, every job's overrides) before the first job starts."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global last_sweep_dir
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = plan_overrides(config)
        write_json(
            sweep_dir / PLAN_FILE,
            {
                "sweep_name": config.get("sweep_name", sweep_dir.name),
                "cells": len(jobs),
                "overrides": [" ".join(job) for job in jobs],
            },
        )
        last_sweep_dir = sweep_dir


def read_plan(sweep_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((sweep_dir / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return {}


def sibling_rows(sweep_dir: Path, exclude: Path | None = None) -> list[dict[str, Any]]:
    """Rows already written in the sweep (unreadable ones are ignored: they are re-measured)."""
    found = []
    for path in sweep_dir.glob(f"*/{ROW_FILE}"):
        if exclude is not None and path.parent == exclude:
            continue
        try:
            found.append(read_row(path))
        except (OSError, ValueError):
            continue
    return found


def _key(identity: dict[str, Any], *drop: str) -> str:
    """Identity as a string; the device by class, so a resumed sweep may land on another GPU."""
    kept = {k: v for k, v in identity.items() if k not in drop}
    kept["device"] = str(kept.get("device")).partition(":")[0]
    return json.dumps(kept, sort_keys=True, default=str)


def already_measured(identity: dict[str, Any], rows: list[dict[str, Any]]) -> dict | None:
    """The row of this very cell, when a previous run of the sweep finished it."""
    key = _key(identity)
    for row in rows:
        if row.get("status") in DONE and _key({k: row.get(k) for k in identity}) == key:
            return row
    return None


def smaller_oom(identity: dict[str, Any], rows: list[dict[str, Any]]) -> dict | None:
    """An `oom` row of the same mechanism/model/mode/batch/dtype/device at fewer tokens."""
    size_keys = ("resolution", "height", "tokens")
    key = _key(identity, *size_keys)
    for row in rows:
        if (
            row.get("status") == "oom"
            and (row.get("tokens") or 0) < identity["tokens"]
            and _key({k: row.get(k) for k in identity}, *size_keys) == key
        ):
            return row
    return None
