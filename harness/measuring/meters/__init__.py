"""The meters a cell is measured with, in one table (harness.measuring.meters.base says what a
meter is). Adding a meter: its module here, its entry in METERS, its columns in
harness.data.rows.COLUMNS."""

from __future__ import annotations

from typing import Any

from harness.measuring.meters import allocator, contention, energy, gpu_state, memory
from harness.measuring.meters.base import Bench, Meter, Plug, Window

# Made, and begun, in this order, ended in the reverse one: the GPU's state first (it waits for
# the temperature to settle before the energy meter measures idle power), the timing checks
# last and first, nearest to the window's edges, so the GPU's clocks are read at the end before
# the energy meter waits for its counter's next step with the GPU already idle. A column is
# filled by one meter per device type.
METERS: tuple[Plug, ...] = (
    memory.GPU,
    memory.CPU,
    allocator.PLUG,
    gpu_state.PLUG,
    energy.DEVICE,
    energy.HOST,
    contention.PLUG,
)


def for_device(device_type: str) -> list[Plug]:
    """The meters that run on this device type (cpu, cuda)."""
    return [plug for plug in METERS if device_type in plug.devices]


class Cell:
    """One cell's meters: made together (before the model exists), begun and ended by span."""

    def __init__(self, bench: Bench) -> None:
        self.plugged: list[tuple[Plug, Meter]] = [
            (plug, plug.make(bench)) for plug in for_device(bench.device.type)
        ]

    def begin(self, span: str) -> None:
        for plug, meter in self.plugged:
            if plug.span == span:
                meter.begin()

    def end(self, span: str) -> None:
        for plug, meter in reversed(self.plugged):
            if plug.span == span:
                meter.end()

    @property
    def spans(self) -> set[str]:
        return {plug.span for plug, _ in self.plugged}

    def fields(self, window: Window) -> dict[str, Any]:
        """Every meter's values for the row; a value for a column a meter did not declare is a
        defect of that meter, refused."""
        row: dict[str, Any] = {}
        for plug, meter in self.plugged:
            values = meter.fields(window)
            undeclared = set(values) - set(plug.columns)
            if undeclared:
                raise RuntimeError(
                    f"meter {plug.name} filled undeclared columns {sorted(undeclared)}"
                )
            row |= values
        return row
