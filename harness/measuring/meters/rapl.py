"""CPU: RAPL package counters (DRAM apart) where /sys/class/powercap is readable. Otherwise
`unavailable: <why>` and empty numbers, never a zero.
"""

from __future__ import annotations

import time
from pathlib import Path

from harness.measuring.meters.base import (
    MIN_WINDOW_S,
    EnergyMeter,
    EnergyReading,
    Unavailable,
    counter_delta,
)

ROOT = Path("/sys/class/powercap")


class RaplMeter:
    """CPU package energy from /sys/class/powercap (intel-rapl, also on AMD); DRAM apart."""

    def __init__(self, packages: list[Path], drams: list[Path]) -> None:
        self.packages, self.drams = packages, drams
        self.source = "rapl:package"

    @staticmethod
    def _read(zone: Path) -> int:
        return int((zone / "energy_uj").read_text())

    def _joules(self, zones: list[Path], before: list[int]) -> float:
        total = 0
        for zone, start in zip(zones, before, strict=True):
            wrap = int((zone / "max_energy_range_uj").read_text()) + 1
            total += counter_delta(start, self._read(zone), wrap)
        return total / 1e6

    def idle_power_w(self, seconds: float) -> float | None:
        before = [self._read(z) for z in self.packages]
        start = time.perf_counter()
        time.sleep(seconds)
        return self._joules(self.packages, before) / (time.perf_counter() - start)

    def begin(self) -> None:
        self._pkg0 = [self._read(z) for z in self.packages]
        self._dram0 = [self._read(z) for z in self.drams]
        self._t0 = time.perf_counter()

    def end(self) -> EnergyReading:
        window = time.perf_counter() - self._t0
        joules = self._joules(self.packages, self._pkg0)
        reading = EnergyReading(self.source, joules or None, window_s=window)
        if self.drams:
            reading.dram_energy_j = self._joules(self.drams, self._dram0)
        if not joules:
            reading.note = "counter did not advance over the window"
        elif window < MIN_WINDOW_S:
            reading.note = f"window {window:.3f} s is shorter than {MIN_WINDOW_S} s"
        else:
            reading.valid = True
        return reading


def rapl_zones(root: Path = ROOT) -> tuple[list[Path], list[Path]]:
    """Readable RAPL package zones and their DRAM sub-zones."""
    packages, drams = [], []
    for zone in sorted(root.glob("intel-rapl:*")):
        try:
            name = (zone / "name").read_text().strip()
            int((zone / "energy_uj").read_text())
        except (OSError, ValueError):
            continue
        if name.startswith("package"):
            packages.append(zone)
        elif name == "dram":
            drams.append(zone)
    return packages, drams


def cpu_meter(rapl_root: Path = ROOT) -> EnergyMeter:
    packages, drams = rapl_zones(rapl_root)
    if packages:
        return RaplMeter(packages, drams)
    return Unavailable(f"no readable RAPL package counter under {rapl_root}")
