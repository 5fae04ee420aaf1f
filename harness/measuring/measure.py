"""The measuring process's side of a cell: counts first, then the meters around the timed window.

Runs inside a fresh process (worker.py): the first use of CUDA, the memory limit and the thread
count all belong to this cell alone.
"""

from __future__ import annotations

import mmap
import random
import resource
import sys
from collections.abc import Callable
from typing import Any

import torch

from harness import paths
from harness.config import Config
from harness.measuring import cell, flops, provenance, revisions
from harness.measuring import nvml as nv
from harness.measuring.meters import energy
from harness.measuring.meters.contention import CpuContention, GpuClocks, TimingCheck, usable_cpus
from harness.measuring.meters.memory import MemoryMeter
from harness.measuring.meters.meter import Meter
from harness.measuring.timing import Timer, Timing
from harness.measuring.workload import make_step


def counts(cfg: Config, send: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """params and FLOPs of the cell's model, from one twin of it on the meta device: no memory,
    so an `oom` cell has them too. A model fvcore cannot trace keeps empty FLOPs; if it is
    broken, measuring it will say so."""
    with torch.device("meta"):
        twin = cell.build(cfg)
    params = sum(p.numel() for p in twin.parameters())
    send({"params": params, "attention_source": origin(cfg.attention_name)})
    try:
        macs = flops.macs_per_image(twin, *cfg.hw)
    except Exception:  # noqa: BLE001
        return {"params": params}
    return {"params": params, "macs": macs, "flops": 2 * macs}


def count(cfg: Config, send: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Only the counts: for a cell that is not run (skipped after an OOM)."""
    if cfg.revision:
        use_revision(cfg, send)
    return counts(cfg, send)


def origin(mechanism: str) -> str:
    """Where the mechanism measured here came from: its module, how it was found, and the file
    (a revision's export shows in the path)."""
    import attention_zoo

    found = attention_zoo.info(mechanism)
    how = getattr(found, "origin", "built-in")  # another revision's zoo predates origins
    if how == "built-in":
        how = f"built-in, attnbench {paths.version()}"
    name = getattr(found, "module", "") or "attention_zoo"
    where = getattr(sys.modules.get(name), "__file__", None) or "?"
    return f"{name} ({how}; {where})"


def use_revision(cfg: Config, send: Callable[[dict[str, Any]], None]) -> None:
    """Import that revision of the mechanism's package, and check the cell's options against it
    (bad -> invalid)."""
    done = cell.source(cfg)
    revisions.activate(done)
    send({"revision_repo": done.repo})
    try:
        with torch.device("meta"):
            cell.build(cfg)
    except ValueError as err:
        raise cell.CellError(f"at revision {cfg.revision}: {err}") from None


_SHIFT: list[object] = []  # kept alive for the process's life


def shift_layout() -> None:
    """Move this process's heap and mappings by a random amount before anything is built.

    Measuring processes are forked from one server, so they all start with its memory layout;
    then the same allocations land at the same addresses in every trial, and an unlucky
    alignment (cache-set or 4K aliasing between buffers) biases every trial of one side of an
    A/B the same way (seen here: an unchanged mechanism 10-17% "slower" in all ten trials of one
    sweep, and not in the next). A random shift per process turns that bias into noise between
    trials, which the intervals then see.
    """
    rng = random.SystemRandom()
    _SHIFT.append(bytearray(rng.randrange(16, 65536, 16)))  # the heap's next chunks
    _SHIFT.append(mmap.mmap(-1, rng.randrange(1, 1024) * mmap.PAGESIZE))  # the next mappings


def limit_address_space(limit_gb: float | None) -> None:
    """A CPU allocation past `limit_gb` beyond what the process already maps fails (-> oom)."""
    if not limit_gb:
        return
    with open("/proc/self/status") as status:
        vm_kib = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    limit = vm_kib * 1024 + int(limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def measure(
    cfg: Config, uuid: str | None, send: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Everything the row gets from measuring; `send` ships early results to the parent.
    `uuid` is the GPU the job leased (None: found through NVML from the device index)."""
    torch.set_num_threads(cfg.threads or 1)
    shift_layout()
    if cfg.revision:
        use_revision(cfg, send)
    send(counts(cfg, send))
    device = torch.device(cfg.device)
    gpu = GpuSide.before_cuda(device, uuid) if device.type == "cuda" else None
    if gpu is not None:
        gpu.make_context()  # from here on this process is on the GPU's process list
    torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    torch.backends.cudnn.allow_tf32 = cfg.tf32
    row: dict[str, Any] = provenance.device(device, gpu.uuid if gpu else None)
    interval = cfg.energy.sample_interval_s
    meter = gpu.energy_meter(interval) if gpu is not None else energy.cpu_meter()
    row["energy_source"] = meter.source
    row["idle_power_w"] = meter.idle_power_w(cfg.energy.idle_s) if cfg.energy.idle_s > 0 else None

    memory: Meter[int | None] = MemoryMeter(device)  # before the model exists: weights count
    limit_address_space(cfg.memory_limit_gb if device.type == "cpu" else None)
    step = make_step(cfg, device)
    memory.begin()  # after the set-up: the peak is the step's, with weights and input resident
    timer = Timer(step, device, cfg.timing)
    warmup_s = timer.warm_up()
    if cfg.compile:
        row["compile_s"] = warmup_s
    checks: list[Meter[TimingCheck]] = [CpuContention(cfg.threads or 1, usable_cpus())]
    if gpu is not None and gpu.handle is not None:
        checks.append(GpuClocks(gpu.nvml, gpu.handle))
    readings: list[energy.EnergyReading] = []
    verdicts: list[TimingCheck] = []

    def begin() -> None:
        for check in checks:
            check.begin()
        meter.begin()

    def end() -> None:
        readings.append(meter.end())
        verdicts.extend(check.end() for check in checks)

    timing = timer.measure(on_begin=begin, on_end=end)
    row["peak_mem_bytes"], row["mem_source"] = memory.end(), memory.source
    row["timing_valid"] = all(v.valid for v in verdicts)
    row["timing_note"] = "; ".join(v.note for v in verdicts if v.note)
    return row | summarise(timing, readings[0], cfg.batch_size)


class GpuSide:
    """The GPU as NVML sees it, looked up before this process touches CUDA, so that the
    process list taken then is everything that is not this cell."""

    def __init__(self, device: torch.device, uuid: str | None, nvml: Any, reason: str) -> None:
        self.device, self.uuid, self.nvml, self.reason = device, uuid, nvml, reason
        self.handle = None if nvml is None or uuid is None else nv.handle(nvml, uuid)
        self.processes = energy.GpuProcesses(nvml, self.handle) if self.handle else None

    @classmethod
    def before_cuda(cls, device: torch.device, uuid: str | None) -> GpuSide:
        try:
            lib = nv.load()
            if uuid is None:
                visible = dict(nv.visible_gpus(lib))
                uuid = visible.get(device.index or 0)
            return cls(device, uuid, lib, "" if uuid else "NVML does not list this GPU")
        except nv.Unavailable as err:
            return cls(device, uuid, None, str(err))

    def make_context(self) -> None:
        """Create this process's CUDA context, and check it is on the GPU NVML was asked about."""
        torch.cuda.set_device(self.device)
        torch.empty(1, device=self.device)
        mine = nv.cuda_uuid(self.device)
        if self.uuid is not None and mine != nv.bare(self.uuid):
            raise RuntimeError(
                f"cuda:{self.device.index} is {mine}, not the leased {self.uuid}: CUDA and NVML "
                "order GPUs differently here; set CUDA_DEVICE_ORDER=PCI_BUS_ID"
            )
        if self.processes is not None:
            self.processes.context_made()

    def energy_meter(self, interval_s: float) -> energy.EnergyMeter:
        if self.processes is None or self.uuid is None:
            return energy.Unavailable(self.reason or "NVML has no handle for this GPU")
        return energy.gpu_meter(self.nvml, self.handle, self.uuid, self.processes, interval_s)


def summarise(timing: Timing, reading: energy.EnergyReading, batch: int) -> dict[str, Any]:
    """Timing and energy objects -> the row's numbers (per batch latency, per image energy)."""
    images = timing.iters * batch
    timed_s = sum(timing.per_iter_s)
    out: dict[str, Any] = {
        "energy_resolution": reading.resolution,
        "latency_ms": timing.median_s * 1e3,
        "latency_ms_p10": timing.quantile(0.10) * 1e3,
        "latency_ms_p90": timing.quantile(0.90) * 1e3,
        "iters": timing.iters,
        "window_s": timing.window_s,
        "step_times_ms": [round(t * 1e3, 6) for t in timing.per_iter_s],
        "throughput_img_s": images / timed_s,
        "energy_valid": reading.valid,
        "energy_note": reading.note,
    }
    if reading.energy_j is not None:
        out["energy_j_per_img"] = reading.energy_j / images
        out["avg_power_w"] = reading.energy_j / reading.window_s if reading.window_s else None
    if reading.sampled_energy_j is not None:
        out["sampled_energy_j_per_img"] = reading.sampled_energy_j / images
    if reading.dram_energy_j is not None:
        out["dram_energy_j_per_img"] = reading.dram_energy_j / images
    return out
