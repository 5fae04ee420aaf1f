"""`attnbench`: the Hydra app. Each job measures one cell and writes its row as result.json."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from . import gpus, sweep
from .cell import Cell, CellError, resolve_device, run, static_row, validate
from .rows import write_row
from .timing import TimingConfig

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def cell_from_config(cfg: DictConfig) -> Cell:
    """Read a job's config into a Cell; CellError for values of the wrong kind."""
    options: dict[str, Any] = OmegaConf.to_container(cfg.attention, resolve=True)
    name = options.pop("name")
    model = cfg.model
    try:
        return Cell(
            attention=name,
            model=model.name,
            depth=model.depth,
            dim=model.dim,
            heads=model.num_heads,
            patch_size=model.patch_size,
            mlp_ratio=model.mlp_ratio,
            resolution=cfg.resolution,
            height=cfg.height,
            batch_size=cfg.batch_size,
            mode=cfg.mode,
            dtype=cfg.dtype,
            device=resolve_device(str(cfg.device)),
            attention_options=options,
            compile=bool(cfg.compile),
            tf32=bool(cfg.tf32),
            timing=TimingConfig(**OmegaConf.to_container(cfg.timing)),
            idle_s=cfg.energy.idle_s,
            sample_interval_s=cfg.energy.sample_interval_s,
            memory_limit_gb=cfg.memory_limit_gb,
            timeout_s=cfg.timeout_s,
        )
    except TypeError as err:
        raise CellError(f"bad configuration: {err}") from None


def describe(row: dict[str, Any]) -> str:
    """One line: the cell, its status, img/s and J/img."""
    cell = (
        f"{row['attention']} {row['model']} {row['resolution']}px b{row['batch_size']} "
        f"{row['mode']} {row['dtype']} {row['device']}"
    )
    if row["status"] != "ok":
        return f"{cell} {row['status']}: {row['error']}".rstrip(": ")
    energy = row.get("energy_j_per_img")
    joules = f"{energy:.3g} J/img" if energy is not None else "J/img n/a"
    return f"{cell} ok {row['throughput_img_s']:.3g} img/s {joules}"


@hydra.main(config_path=CONF_DIR, config_name="config", version_base=None)
def job(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    progress = ""
    if multirun:
        sweep_dir = Path(hydra_cfg.sweep.dir)
        cells = sweep.read_plan(sweep_dir).get("cells", "?")
        progress = f"[{hydra_cfg.job.num + 1}/{cells}] "
    try:
        cell = cell_from_config(cfg)
        validate(cell)
    except CellError as err:
        if not multirun:
            print(f"attnbench: error: {err}", file=sys.stderr)
            sys.exit(2)
        row = {
            "attention": cfg.attention.get("name"),
            "model": cfg.model.get("name"),
            "resolution": cfg.get("resolution"),
            "batch_size": cfg.get("batch_size"),
            "mode": cfg.get("mode"),
            "dtype": cfg.get("dtype"),
            "device": str(cfg.get("device")),
            "status": "error",
            "error": str(err),
        }
    else:
        try:
            row = measure_or_skip(cell, sweep_dir if multirun else None, cfg.gpu)
        except gpus.NoFreeGpu as err:
            row = static_row(cell) | {"status": "error", "error": str(err)}
        if row is None:
            return
    row["overrides"] = " ".join(hydra_cfg.overrides.task)
    write_row(job_dir, row)
    print(progress + describe(row), flush=True)


def measure_or_skip(cell: Cell, sweep_dir: Path | None, gpu: DictConfig) -> dict[str, Any] | None:
    """In a sweep: None when a previous run measured this cell, `skipped_oom` when the same
    configuration already ran out of memory at fewer tokens; otherwise the measured row."""
    if sweep_dir is not None:
        siblings = sweep.sibling_rows(sweep_dir)
        done = sweep.already_measured(cell.identity(), siblings)
        if done is not None:
            print(f"resumed: {describe(done)} (measured by an earlier run)", flush=True)
            return None
        oom = sweep.smaller_oom(cell.identity(), siblings)
        if oom is not None:
            return static_row(cell) | {
                "status": "skipped_oom",
                "error": f"not run: out of memory at {oom['resolution']}px already",
            }
    if not cell.device.startswith("cuda"):
        return run(cell)
    if not gpu.lease:
        return run(replace(cell, device="cuda:0" if cell.device == "cuda" else cell.device))
    held = gpus.lease(gpus.candidates(cell.device), Path(gpu.lock_dir), gpu.wait_s)
    try:
        return run(replace(cell, device=held.device))
    finally:
        held.release()


def main() -> None:
    """The console script: run the Hydra app; after a sweep, aggregate it and render its report."""
    from .report import report_sweep

    sweep.last_sweep_dir = None
    job()
    if sweep.last_sweep_dir is not None:
        try:
            report_sweep(sweep.last_sweep_dir)
        except Exception as err:  # the rows are safe on disk; say so and fail loudly
            print(
                f"attnbench: the cells are measured in {sweep.last_sweep_dir}, but the report "
                f"failed: {err!r}; retry with attnbench-report",
                file=sys.stderr,
            )
            sys.exit(1)
