"""The configuration schema, registered with Hydra's ConfigStore: every default lives here.

The `attention` and `model` config groups are made from the attention_zoo registry (each
mechanism's options and defaults come from its constructor) and its presets, so a new mechanism
or preset needs no YAML. A YAML in conf/attention/ is only for a variant (its `defaults` list
names the mechanism it changes).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

import attention_zoo as zoo

_VIT = inspect.signature(zoo.ViT).parameters


@dataclass
class TimingConfig:
    warmup_iters: int = 2  # at least this many warm-up steps ...
    warmup_s: float = 0.5  # ... and at least this long
    window_s: float = 2.0  # timed window: as many steps as fill it ...
    min_iters: int = 3  # ... but no fewer ...
    max_iters: int = 10_000  # ... and no more


@dataclass
class EnergyConfig:
    idle_s: float = 1.0  # idle power measured this long before each cell (0: skip)
    settle_s: float = 30.0  # GPU: wait at most this long for the temperature to settle first
    sample_interval_s: float = 0.05  # NVML power sampling period (instant power, 50 ms)


@dataclass
class GpuConfig:
    lease: bool = True  # each job locks the GPU it measures on: parallel jobs never share one
    lock_dir: str = "${oc.env:ATTNBENCH_LOCK_DIR,/tmp/attnbench-gpu-locks}"
    wait_s: float = 86400.0  # how long a job waits for a free GPU before it is recorded `error`
    # the CUDA caching allocator's expandable segments: a borderline OOM from fragmentation
    # (which would skip every larger size) becomes a measurement; recorded in every GPU row
    expandable_segments: bool = False


@dataclass
class ModelConfig:
    name: str = MISSING
    depth: int = MISSING
    dim: int = MISSING
    num_heads: int = MISSING
    patch_size: int = _VIT["patch_size"].default
    mlp_ratio: float = _VIT["mlp_ratio"].default


@dataclass
class Config:
    """One job: the cell it measures and how. `attention` is {name, options...}."""

    attention: Any = MISSING
    model: ModelConfig = MISSING
    resolution: int = 224  # image side in pixels, a multiple of model.patch_size
    height: int | None = None  # image height when not square (null: = resolution)
    batch_size: int = 1
    mode: str = "infer"  # infer | train (forward + backward + AdamW step)
    dtype: str = "float32"  # float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    compile: bool = False  # torch.compile the model; compile time is reported, never timed
    # torch.compile's mode: reduce-overhead replays CUDA graphs, so a small GPU cell measures
    # the GPU rather than Python's kernel launches (see gpu_busy_share)
    compile_mode: str = "default"
    tf32: bool = False  # allow TF32 matmuls/convolutions on Ampere+ GPUs
    threads: int | None = None  # torch intra-op threads (null: the CPUs this process may use)
    trials: int = 1  # independent measurements of each cell, each in its own process
    # the order cells run in: grid (each mechanism's sizes back to back) or shuffled (seeded,
    # so a cell's energy cannot depend on how hot the one before it left the GPU)
    order: str = "grid"
    order_seed: int = 0
    doctor: bool = True  # a sweep stores attnbench-doctor's findings at its start
    report: bool = True  # a sweep renders its report at the end (attnbench-report does it later)
    trial: int = 0  # which of them this job is (set by the sweeper)
    revision: str | None = None  # measure this git revision of the mechanism's package
    revision_repo: str | None = None  # the git repository of `revision` (null: the current dir's)
    revision_package: str | None = None  # the package exported (null: the mechanism's own)
    timing: TimingConfig = field(default_factory=TimingConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)
    memory_limit_gb: float | None = None  # CPU: allocations past this many GiB fail -> `oom`
    # CPU: glibc's malloc held steady (large buffers from the heap, the heap never trimmed), so a
    # step measures the cell rather than page faults that depend on the process's history; or
    # `system`, glibc's defaults (harness.measuring.meters.allocator)
    malloc: str = "steady"
    timeout_s: float = 3600.0  # a cell running longer is killed and recorded `error`
    sweep_name: str = "single"  # set by the sweep/ group; names the run and report directories

    @property
    def attention_name(self) -> str:
        return str(self.attention["name"])

    @property
    def attention_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.attention.items() if k != "name"}

    @property
    def model_label(self) -> str:
        """The preset's name, or e.g. `small(depth=8)` when the preset's shape was changed: a
        row of a changed shape is its own model, not the preset it started from."""
        m = self.model
        if m.name not in zoo.PRESETS:
            return m.name
        preset: dict[str, float] = {"patch_size": _VIT["patch_size"].default}
        preset |= {"mlp_ratio": _VIT["mlp_ratio"].default, **zoo.PRESETS[m.name]}
        shape: dict[str, float] = {"depth": m.depth, "dim": m.dim, "num_heads": m.num_heads}
        shape |= {"patch_size": m.patch_size, "mlp_ratio": m.mlp_ratio}
        changed = [f"{k}={v:g}" for k, v in shape.items() if v != preset[k]]
        return f"{m.name}({','.join(changed)})" if changed else m.name

    @property
    def hw(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return (self.height or self.resolution, self.resolution)

    @property
    def tokens(self) -> int:
        p = self.model.patch_size
        return (self.hw[0] // p) * (self.hw[1] // p)


@dataclass
class SweeperConfig:
    _target_: str = "hydra_plugins.attnbench_sweeper.AttnbenchSweeper"
    params: dict[str, str] | None = None  # key -> sweep values, as on the command line


def register(named: list[str] | tuple[str, ...] = ()) -> None:
    """Put the schema, the groups from the registry and the sweeper's config into Hydra's
    ConfigStore (the sweeper itself is registered by harness.running.app).

    `named`: mechanisms named by import path on the command line (attention=pkg.module.Class),
    already loaded into the registry; they become group entries like the registered ones."""
    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
    store.store(group="hydra/sweeper", name="attnbench", node=SweeperConfig)
    for name in dict.fromkeys([*zoo.available(), *named]):
        options = {
            k: list(v) if isinstance(v, tuple) else v for k, v in zoo.info(name).options.items()
        }
        store.store(group="attention", name=name, node={"name": name, **options})
    for name, spec in zoo.PRESETS.items():
        store.store(group="model", name=name, node=ModelConfig(name=name, **spec))
