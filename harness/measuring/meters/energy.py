"""Energy as meters: an energy source (NVML for a GPU, RAPL for a CPU package) read over the
timed window, its numbers per image in the row. Two run side by side on a GPU cell: the GPU's
own (the `energy_*` columns, what the report and the check use) and the host's CPU package (the
`host_energy_*` columns), each from its own counter, neither derived from the other.

The idle-power wait happens when the device meter is made, and only where there is a source to
read (no source, no wait).
"""

from __future__ import annotations

from typing import Any

from harness.measuring.meters import rapl
from harness.measuring.meters.base import Bench, EnergyMeter, EnergyReading, Plug, Window


class Energy:
    """One energy source over the window, its values under the columns of `prefix`."""

    def __init__(self, source: EnergyMeter, prefix: str, idle_s: float = 0.0) -> None:
        self.source, self.prefix = source, prefix
        self.named = source.source  # what was asked for, before the window may change it
        self.idle_w = source.idle_power_w(idle_s) if idle_s > 0 else None
        self.reading: EnergyReading | None = None

    def begin(self) -> None:
        self.source.begin()

    def end(self) -> None:
        self.reading = self.source.end()

    def fields(self, window: Window) -> dict[str, Any]:
        r = self.reading
        assert r is not None, "fields() before end()"

        def per_image(joules: float | None) -> float | None:
            return None if joules is None else joules / window.images

        values: dict[str, Any] = {
            "energy_source": self.named,
            "energy_valid": r.valid,
            "energy_note": r.note,
            "energy_j_per_img": per_image(r.energy_j),
            "dram_energy_j_per_img": per_image(r.dram_energy_j),
        }
        if self.prefix:  # the host's package: its energy, not the cell's device's details
            return {f"{self.prefix}{k}": v for k, v in values.items()}
        power = r.energy_j / r.window_s if r.energy_j is not None and r.window_s else None
        above = None
        if r.energy_j is not None and r.window_s and self.idle_w is not None:
            above = per_image(r.energy_j - self.idle_w * r.window_s)
        return values | {
            "energy_above_idle_j_per_img": above,
            "idle_power_w": self.idle_w,
            "avg_power_w": power,
            "energy_resolution": r.resolution,
            "sampled_energy_j_per_img": per_image(r.sampled_energy_j),
        }


def _device(bench: Bench) -> Energy:
    if bench.gpu is not None:
        source = bench.gpu.energy_meter(bench.cfg.energy.sample_interval_s)
    else:
        source = rapl.cpu_meter()
    return Energy(source, "", bench.cfg.energy.idle_s)


def _host(bench: Bench) -> Energy:
    return Energy(rapl.cpu_meter(), "host_")


DEVICE = Plug(
    "energy",
    (
        "energy_source",
        "energy_valid",
        "energy_note",
        "energy_j_per_img",
        "dram_energy_j_per_img",
        "idle_power_w",
        "energy_above_idle_j_per_img",
        "avg_power_w",
        "energy_resolution",
        "sampled_energy_j_per_img",
    ),
    ("cpu", "cuda"),
    "window",
    _device,
)
HOST = Plug(
    "host_energy",
    (
        "host_energy_source",
        "host_energy_valid",
        "host_energy_note",
        "host_energy_j_per_img",
        "host_dram_energy_j_per_img",
    ),
    ("cuda",),  # on a CPU cell the host's package is the device meter already
    "window",
    _host,
)
