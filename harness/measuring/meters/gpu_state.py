"""The GPU's state when a cell starts: how hot the previous cell left it, and how long it has
been idle. A cell's energy depends on it (power rises with temperature at the same work), and
each mechanism's sizes run back to back, so without it the order of the cells leaks into their
energy. Made first: a bounded wait until the temperature has settled (it stops changing), then
the window's start temperature and the time since the last cell on this GPU ended its window
(a stamp beside the GPU's lock) are recorded; the window's end writes the stamp for the next.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from harness.measuring import nvml as nv
from harness.measuring.meters.base import Bench, Plug, Window

SETTLED_C = 1  # the temperature may move this much over SETTLE_READS reads and count as settled
SETTLE_READS = 3
SETTLE_POLL_S = 0.5


class GpuState:
    def __init__(self, nvml: Any, handle: Any, stamp: Path | None, settle_s: float) -> None:
        self.nvml, self.handle, self.stamp = nvml, handle, stamp
        self.idle_before_s = self._idle_before()
        self.settle_s, self.settled = self._settle(settle_s)
        self.start_c: Any = None

    def _temp(self) -> Any:
        lib, h = self.nvml, self.handle
        return nv.read(lambda: lib.nvmlDeviceGetTemperature(h, lib.NVML_TEMPERATURE_GPU))

    def _idle_before(self) -> float | None:
        try:
            return max(time.time() - float(self.stamp.read_text()), 0.0) if self.stamp else None
        except (OSError, ValueError):  # no cell has run on this GPU since the stamps began
            return None

    def _settle(self, limit_s: float) -> tuple[float, bool | None]:
        """Wait (at most `limit_s`) until the temperature stops changing; (seconds, settled)."""
        if limit_s <= 0:
            return 0.0, None
        start, reads = time.monotonic(), []
        while True:
            value = self._temp()
            if nv.failed(value):
                return time.monotonic() - start, None
            reads.append(int(value))
            recent = reads[-SETTLE_READS:]
            if len(recent) == SETTLE_READS and max(recent) - min(recent) <= SETTLED_C:
                return time.monotonic() - start, True
            if time.monotonic() - start >= limit_s:
                return time.monotonic() - start, False
            time.sleep(SETTLE_POLL_S)

    def begin(self) -> None:
        self.start_c = self._temp()

    def end(self) -> None:
        if self.stamp is not None:  # a lock directory not ours to write: the next cannot tell
            with contextlib.suppress(OSError):
                self.stamp.write_text(f"{time.time()}\n")

    def fields(self, window: Window) -> dict[str, Any]:
        return {
            "window_start_temperature_c": None if nv.failed(self.start_c) else self.start_c,
            "idle_before_s": self.idle_before_s,
            "settle_s": self.settle_s,
            "settled": self.settled,
        }


def _make(bench: Bench) -> GpuState:
    gpu = bench.gpu
    assert gpu is not None, "a GPU meter on a cell without a GPU"
    where = Path(bench.cfg.gpu.lock_dir)
    stamp = where / f"{gpu.uuid}.last-window" if gpu.uuid and where.is_dir() else None
    if gpu.handle is None:
        return GpuState(gpu.nvml, None, stamp, 0.0)
    return GpuState(gpu.nvml, gpu.handle, stamp, bench.cfg.energy.settle_s)


PLUG = Plug(
    "gpu_state",
    ("window_start_temperature_c", "idle_before_s", "settle_s", "settled"),
    ("cuda",),
    "window",
    _make,
)
