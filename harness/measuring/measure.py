"""The measuring process's side of a cell: counts first, then the meters around the timed window.

Runs inside a fresh process (harness.running.worker): the first use of CUDA, the memory limit and
the thread count all belong to this cell alone.
"""

from __future__ import annotations

import mmap
import os
import random
import resource
import sys
from collections.abc import Callable
from typing import Any

import torch

from harness import paths
from harness.config import Config
from harness.measuring import cell, flops, meters, provenance, revisions
from harness.measuring.gpu import GpuSide
from harness.measuring.meters import allocator, memory
from harness.measuring.meters.base import Bench, Window
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
    if torch.device(cfg.device).type == "cpu":
        allocator.steady_malloc(cfg.malloc)  # before anything the cell allocates
    shift_layout()
    if cfg.revision:
        use_revision(cfg, send)
    send(counts(cfg, send))
    device = torch.device(cfg.device)
    if device.type == "cuda":  # CUDA's device order as NVML's (the lease's UUID is checked)
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    if device.type == "cuda" and cfg.gpu.expandable_segments:
        memory.use_expandable_segments()  # the allocator reads it when CUDA starts
    gpu = GpuSide.before_cuda(device, uuid) if device.type == "cuda" else None
    if gpu is not None:
        gpu.make_context()  # from here on this process is on the GPU's process list
    torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    torch.backends.cudnn.allow_tf32 = cfg.tf32
    row: dict[str, Any] = provenance.device(device, gpu.uuid if gpu else None)
    if gpu is not None:
        row["gpu_processes"] = gpu.others()
    cell_meters = meters.Cell(Bench(cfg, device, gpu))  # before the model exists
    limit_address_space(cfg.memory_limit_gb if device.type == "cpu" else None)
    step = make_step(cfg, device)
    cell_meters.begin("run")  # after the set-up: the peak is the step's, weights and input in
    timer = Timer(step, device, cfg.timing)
    warmup_s = timer.warm_up()
    if cfg.compile:
        row["compile_s"] = warmup_s
    row["attention_kernel"] = step.kernel() or None
    timing = timer.measure(
        on_begin=lambda: cell_meters.begin("window"), on_end=lambda: cell_meters.end("window")
    )
    cell_meters.end("run")
    if "step" in cell_meters.spans:  # one more step, for meters that would slow the timed ones
        cell_meters.begin("step")
        step()
        cell_meters.end("step")
    row |= cell_meters.fields(Window(timing.iters * cfg.batch_size, timing.window_s))
    return row | timing_fields(timing, cfg.batch_size)


def timing_fields(timing: Timing, batch: int) -> dict[str, Any]:
    """The timed window -> the row's timing numbers (latency per batch, throughput)."""
    images = timing.iters * batch
    return {
        "latency_ms": timing.median_s * 1e3,
        "latency_ms_p10": timing.quantile(0.10) * 1e3,
        "latency_ms_p90": timing.quantile(0.90) * 1e3,
        "iters": timing.iters,
        "window_s": timing.window_s,
        "step_times_ms": [round(t * 1e3, 6) for t in timing.per_iter_s],
        "throughput_img_s": images / sum(timing.per_iter_s),
    }
