"""The meters a cell is measured with, in one table (harness.measuring.meters.base says what a
meter is). Adding a meter: its module here, its entry in METERS, its columns in
harness.data.rows.COLUMNS."""

from __future__ import annotations

from harness.measuring.meters import contention, energy, memory
from harness.measuring.meters.base import Plug

# begun in this order at the window's start (the energy sources last, nearest to it), ended in
# the reverse order
METERS: tuple[Plug, ...] = (memory.PLUG, contention.PLUG, energy.DEVICE, energy.HOST)


def for_device(device_type: str) -> list[Plug]:
    """The meters that run on this device type (cpu, cuda)."""
    return [plug for plug in METERS if device_type in plug.devices]
