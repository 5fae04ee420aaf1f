"""Peak-memory meter. Made before the cell builds anything, `begin()` once the model and input
are in place (so set-up copies, like float32 weights cast to bfloat16, are not in the peak), and
`end()` after the timed window.

On a GPU: the CUDA caching allocator's peak, reset at begin (it starts from what is resident:
weights, input): `peak_mem_bytes`. On the CPU: the kernel's resident high-water mark (VmHWM),
reset at begin through /proc/self/clear_refs, minus the resident set when the meter was made
and minus the file-backed pages (library code) that became resident meanwhile: what this cell
made resident, not the process's history, and not how much of libtorch it happened to touch
(which varies between installations by tens of MB): `peak_rss_bytes`. It also depends on
malloc's state, so the CPU's `peak_mem_bytes` comes from torch's allocator instead
(harness.measuring.meters.allocator).
"""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Any

import torch

from harness.measuring.meters.base import Bench, Plug, Window

_STATUS = Path("/proc/self/status")
ALLOC_CONF = "PYTORCH_CUDA_ALLOC_CONF"


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class MemoryMeter:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.source = ""
        self.peak: int | None = None
        self.reserved: int | None = None
        cpu = device.type != "cuda"
        self.baseline_kib = (_status_kib("VmRSS") or 0) if cpu else 0
        self.file_kib = (_status_kib("RssFile") or 0) if cpu else 0

    def begin(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.source = "cuda:max_memory_allocated"
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.source = "cpu:vmhwm_after_reset-minus-start_rss-minus-file_pages"
        except OSError:
            self.source = "cpu:ru_maxrss-minus-start_rss"

    def end(self) -> None:
        self.peak = self._peak()
        if self.device.type == "cuda":
            self.reserved = int(torch.cuda.max_memory_reserved(self.device))

    def fields(self, window: Window) -> dict[str, Any]:
        if self.device.type != "cuda":
            return {"peak_rss_bytes": self.peak}
        return {
            "peak_mem_bytes": self.peak,
            "mem_source": self.source,
            "reserved_mem_bytes": self.reserved,
            "allocator_conf": os.environ.get(ALLOC_CONF, ""),
        }

    def _peak(self) -> int | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        if self.source.startswith("cpu:vmhwm"):
            peak_kib = _status_kib("VmHWM")
        else:
            peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if peak_kib is None:
            self.source = "unavailable: /proc/self/status is not readable"
            return None
        file_growth = (_status_kib("RssFile") or self.file_kib) - self.file_kib
        return max(peak_kib - self.baseline_kib - file_growth, 0) * 1024


def _make(bench: Bench) -> MemoryMeter:
    return MemoryMeter(bench.device)


# spans the warm-up too: the first steps allocate what the timed ones reuse
GPU = Plug(
    "memory",
    ("peak_mem_bytes", "mem_source", "reserved_mem_bytes", "allocator_conf"),
    ("cuda",),
    "run",
    _make,
)
CPU = Plug("resident_memory", ("peak_rss_bytes",), ("cpu",), "run", _make)


def use_expandable_segments() -> None:
    """Before CUDA starts in this process: the allocator's expandable segments, kept beside
    whatever else PYTORCH_CUDA_ALLOC_CONF already says."""
    settings = [s for s in os.environ.get(ALLOC_CONF, "").split(",") if s]
    settings = [s for s in settings if not s.startswith("expandable_segments:")]
    os.environ[ALLOC_CONF] = ",".join([*settings, "expandable_segments:True"])
