"""What a meter is: something read around a cell's timed window that fills declared columns
of its row. `begin()` and `end()` bracket what it measures, `fields(window)` turns what it read
into row values; the work before the cell (a resident-memory baseline, an idle-power wait) is
done when it is made. The measuring process runs every meter of the table in
harness.measuring.meters that supports the cell's device, and refuses a value for a column the
meter did not declare.

Energy sources (NVML, RAPL) share one reading type and one shape, defined here, so that each
lives in a module of its own and any of them can feed an energy meter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from harness.config import Config
    from harness.measuring.gpu import GpuSide

MAX_RESOLUTION = 0.01  # energy counter uncertainty allowed before energy is invalid (fraction)
MIN_WINDOW_S = 1.0  # RAPL and power sampling: shorter windows are too coarse


SPANS = ("window", "run", "step")


@dataclass(frozen=True)
class Window:
    """The timed window as the meters' fields need it."""

    images: int
    seconds: float


class Meter(Protocol):
    def begin(self) -> None: ...

    def end(self) -> None: ...

    def fields(self, window: Window) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Bench:
    """What a meter may look at when it is made: the cell's config, its device, and the GPU as
    NVML saw it before this process touched CUDA (None on the CPU)."""

    cfg: Config
    device: torch.device
    gpu: GpuSide | None


@dataclass(frozen=True)
class Plug:
    """A meter's entry in the table: the columns it fills, the device types it runs on, what it
    spans ("window": the timed window; "run": warm-up and window, as peak memory must; "step":
    one more step after the window, for a meter that would slow the timed ones), and how it is
    made."""

    name: str
    columns: tuple[str, ...]
    devices: tuple[str, ...]
    span: str
    make: Callable[[Bench], Meter]

    def __post_init__(self) -> None:
        if self.span not in SPANS:
            raise ValueError(
                f"meter {self.name}: span is one of {', '.join(SPANS)}, not {self.span!r}"
            )


@dataclass
class EnergyReading:
    source: str
    energy_j: float | None = None
    sampled_energy_j: float | None = None  # power samples integrated over the same window
    dram_energy_j: float | None = None
    window_s: float | None = None
    resolution: float | None = None  # uncertainty of energy_j, as a fraction of it
    valid: bool = False
    note: str = ""


class EnergyMeter(Protocol):
    """An energy source: `idle_power_w()` before the cell, `begin()` / `end()` around the timed
    window; `source` names the counter (or why there is none)."""

    source: str

    def idle_power_w(self, seconds: float) -> float | None: ...

    def begin(self) -> None: ...

    def end(self) -> EnergyReading: ...


def counter_delta(before: int, after: int, wrap: int) -> int:
    """Difference of a monotonically increasing counter that wraps round at `wrap`."""
    return after - before if after >= before else after + wrap - before


class Unavailable:
    def __init__(self, reason: str) -> None:
        self.source = f"unavailable: {reason}"

    def idle_power_w(self, seconds: float) -> float | None:
        return None

    def begin(self) -> None:
        pass

    def end(self) -> EnergyReading:
        return EnergyReading(self.source, note=self.source)
