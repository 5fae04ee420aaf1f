"""What a cell is: its identity columns from a job's config, and every value check before
measuring. Runs in the launching process, which never touches CUDA (see harness.running.worker)."""

from __future__ import annotations

import os
from typing import Any

import attention_zoo as zoo
from harness.config import Config
from harness.data.rows import cell_words
from harness.measuring import revisions
from harness.measuring.meters.contention import usable_cpus

MODES = ("infer", "train")
DTYPES = ("float32", "bfloat16", "float16")
MALLOCS = ("steady", "system")  # CPU cells: harness.measuring.meters.allocator
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class CellError(ValueError):
    """Bad input for a cell: the message names the valid choices."""


def cuda_count() -> int:
    """GPUs CUDA would see, asked through NVML so this process never initialises CUDA."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(requested: str) -> str:
    """'auto' -> cuda when present, else cpu; a clear CellError for devices this machine lacks."""
    if requested == "cpu":
        return "cpu"
    if requested == "auto":
        return "cuda" if cuda_count() else "cpu"
    if requested == "cuda" or requested.startswith("cuda:"):
        count = cuda_count()
        index = requested.partition(":")[2] or "0"
        valid = ["auto", "cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(count)] if count else [])
        if not index.isdigit() or int(index) >= count:
            why = "CUDA is not available" if not count else f"this machine has {count} GPU(s)"
            raise CellError(
                f"device {requested!r} is not usable: {why}; valid choices here: {', '.join(valid)}"
            )
        return requested  # "cuda": any free GPU, leased per job (harness.running.gpus)
    raise CellError(f"unknown device {requested!r}; valid choices: auto, cpu, cuda, cuda:N")


def validate(cfg: Config) -> Config:
    """Every check that needs no measurement, in one place; the device resolved, threads set.

    Raises CellError naming the valid choices. Mechanism options are checked by building the
    model on the meta device (no memory), except for another revision's zoo, which only its
    measuring process has.
    """
    if cfg.mode not in MODES:
        raise CellError(f"unknown mode {cfg.mode!r}; valid choices: {', '.join(MODES)}")
    if cfg.dtype not in DTYPES:
        raise CellError(f"unknown dtype {cfg.dtype!r}; valid choices: {', '.join(DTYPES)}")
    if cfg.compile_mode not in COMPILE_MODES:
        raise CellError(
            f"unknown compile_mode {cfg.compile_mode!r}; valid choices: {', '.join(COMPILE_MODES)}"
        )
    if cfg.compile_mode != "default" and not cfg.compile:
        raise CellError(f"compile_mode={cfg.compile_mode} needs compile=true")
    if cfg.malloc not in MALLOCS:
        raise CellError(f"unknown malloc {cfg.malloc!r}; valid choices: {', '.join(MALLOCS)}")
    if cfg.batch_size < 1:
        raise CellError(f"batch_size must be an integer >= 1, got {cfg.batch_size!r}")
    if cfg.threads is not None and cfg.threads < 1:
        raise CellError(f"threads must be >= 1 or null (all usable CPUs), got {cfg.threads}")
    p = cfg.model.patch_size
    for side in cfg.hw:
        if side < p or side % p:
            raise CellError(
                f"resolution {side} is not a positive multiple of the patch size "
                f"{p}; valid resolutions: {p}, {2 * p}, ..., e.g. 224, 1024, 9216"
            )
    if cfg.revision is not None:
        try:  # the measuring process checks the options against that revision's code
            cfg.revision = source(cfg).sha
        except revisions.RevisionError as err:
            raise CellError(str(err)) from None
    else:
        import torch

        try:
            with torch.device("meta"):
                build(cfg)
        except ValueError as err:
            raise CellError(str(err)) from None
    cfg.device = resolve_device(cfg.device)
    if cfg.malloc != "steady" and cfg.device.startswith("cuda"):
        raise CellError(f"malloc={cfg.malloc} is a CPU setting; a cuda cell takes malloc=steady")
    cfg.threads = cfg.threads or usable_cpus()
    return cfg


def source(cfg: Config) -> revisions.Export:
    """The exported revision a cell measures: made by the sweep's planner (a pinned commit),
    else resolved and exported now."""
    assert cfg.revision is not None
    package = cfg.revision_package or revisions.package_of(cfg.attention_name)
    done = revisions.cached(package, cfg.revision)
    if done is None:
        done = revisions.export(package, cfg.revision, revisions.repository(cfg.revision_repo))
    return done


def build(cfg: Config) -> zoo.ViT:
    """The cell's model (on the current default device), from the zoo imported now: another
    revision's, in a measuring process that activated one."""
    import attention_zoo

    m = cfg.model
    return attention_zoo.ViT(
        cfg.attention_name,
        m.depth,
        m.dim,
        m.num_heads,
        patch_size=m.patch_size,
        mlp_ratio=m.mlp_ratio,
        **cfg.attention_options,
    )


def fields(cfg: Config) -> dict[str, Any]:
    """The row's identity columns (and tokens, trial, revision) for a job's config."""
    return {
        "attention": cfg.attention_name,
        "attention_options": changed_options(cfg.attention_name, cfg.attention_options),
        "model": cfg.model_label,
        "depth": cfg.model.depth,
        "dim": cfg.model.dim,
        "heads": cfg.model.num_heads,
        "patch_size": cfg.model.patch_size,
        "mlp_ratio": cfg.model.mlp_ratio,
        "resolution": cfg.resolution,
        "height": cfg.hw[0],
        "tokens": cfg.tokens,
        "batch_size": cfg.batch_size,
        "mode": cfg.mode,
        "dtype": cfg.dtype,
        "device": cfg.device,
        "compile": cfg.compile,
        # torch's default mode is left empty, as rows from before the setting have it
        "compile_mode": None if cfg.compile_mode == "default" else cfg.compile_mode,
        "tf32": cfg.tf32,
        "threads": cfg.threads,
        "malloc": None if cfg.malloc == "steady" else cfg.malloc,
        "trial": cfg.trial,
        "revision": cfg.revision or "",
    }


def describe(row: dict[str, Any]) -> str:
    """One line: the cell, its status, img/s and J/img."""
    changed = changed_options(row["attention"], row.get("attention_options") or {})
    opts = "".join(f" {k}={v}" for k, v in changed.items())
    rev = f" @{row['revision']}" if row.get("revision") else ""
    trial = f" trial {row['trial']}" if row.get("trial") else ""
    cell = cell_words(row, f"{opts}{rev}") + trial
    if row["status"] != "ok":
        return f"{cell} {row['status']}: {row['error']}".rstrip(": ")
    energy = row.get("energy_j_per_img")
    joules = f"{energy:.3g} J/img" if energy is not None else "J/img n/a"
    line = f"{cell} ok {row['throughput_img_s']:.3g} img/s {joules}"
    if row.get("timing_valid") is False:
        line += f" UNTRUSTED timing: {str(row.get('timing_note')).split('; ')[0]}"
    return line


def changed_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options that differ from the mechanism's defaults, sorted: what a cell's identity
    holds, so that a mechanism gaining an option (with a default that keeps its behaviour) does
    not change the identity of every row measured before it."""
    try:
        defaults = zoo.info(name).options
    except ValueError:  # another revision's mechanism, or a plugin that cannot be loaded here
        defaults = {}
    return {
        k: v for k, v in sorted(options.items()) if k not in defaults or _differs(v, defaults[k])
    }


def _differs(value: Any, default: Any) -> bool:
    if isinstance(default, tuple):
        default = list(default)
    return bool(value != default)
