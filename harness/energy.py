"""Energy meters with one shape: `begin()` / `end()` around the timed window, `idle_power_w()`.

Sources, best first: the NVML total-energy counter (mJ) of the GPU found by UUID; NVML power
samples integrated over the window where the counter is not supported; RAPL package counters
(DRAM apart) for a CPU where /sys/class/powercap is readable; otherwise `unavailable`, with the
reason, and no numbers.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import nvml as nv
from .meter import Meter

NVML_COUNTER_WRAP = 2**64  # nvmlDeviceGetTotalEnergyConsumption is an unsigned 64-bit mJ count
MIN_WINDOW_S = 1.0  # NVML's energy counter and power readings refresh every ~20-100 ms


@dataclass
class EnergyReading:
    source: str
    energy_j: float | None = None
    sampled_energy_j: float | None = None  # NVML power integration beside the counter
    dram_energy_j: float | None = None
    window_s: float | None = None
    valid: bool = False
    note: str = ""


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


class PowerSampler:
    """Background thread reading NVML power (mW) every `interval_s`; trapezoid integral in J."""

    def __init__(self, nvml: Any, handle: Any, interval_s: float) -> None:
        self.nvml, self.handle, self.interval_s = nvml, handle, interval_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            watts = self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1e3
            self.samples.append((time.perf_counter(), watts))
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> float | None:
        """Joules over the sampled span, or None with fewer than two samples."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples.append(
            (time.perf_counter(), self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1e3)
        )
        if len(self.samples) < 2:
            return None
        return sum(
            (t1 - t0) * (p0 + p1) / 2
            for (t0, p0), (t1, p1) in zip(self.samples, self.samples[1:], strict=False)
        )


class NvmlMeter:
    """One GPU through NVML: the energy counter where supported, power sampling beside it."""

    def __init__(self, nvml: Any, handle: Any, interval_s: float = 0.01) -> None:
        self.nvml, self.handle = nvml, handle
        self.sampler = PowerSampler(nvml, handle, interval_s)
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            self.has_counter = True
        except nvml.NVMLError as err:
            if not _is_not_supported(nvml, err):
                raise
            self.has_counter = False
        self.source = "nvml:total_energy_counter" if self.has_counter else "nvml:power_sampling"

    def idle_power_w(self, seconds: float) -> float | None:
        self.sampler.start()
        time.sleep(seconds)
        joules = self.sampler.stop()
        span = self.sampler.samples[-1][0] - self.sampler.samples[0][0]
        return joules / span if joules is not None and span > 0 else None

    def begin(self) -> None:
        self._t0 = time.perf_counter()
        self.sampler.start()
        self._counter0 = (
            self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) if self.has_counter else None
        )

    def end(self) -> EnergyReading:
        counter1 = (
            self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) if self.has_counter else None
        )
        window = time.perf_counter() - self._t0
        sampled = self.sampler.stop()
        energy: float | None = sampled
        if self._counter0 is not None and counter1 is not None:
            energy = counter_delta(self._counter0, counter1, NVML_COUNTER_WRAP) / 1e3
        reading = _judge(
            EnergyReading(
                self.source, energy, sampled if self.has_counter else None, window_s=window
            )
        )
        if others := other_processes(self.nvml, self.handle):
            reading.valid = False
            reading.note = f"process {', '.join(map(str, others))} started on this GPU meanwhile"
        return reading


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
        reading = EnergyReading(
            self.source, self._joules(self.packages, self._pkg0), window_s=window
        )
        if self.drams:
            reading.dram_energy_j = self._joules(self.drams, self._dram0)
        return _judge(reading)


def _judge(reading: EnergyReading) -> EnergyReading:
    """Flag what cannot be trusted; a zero delta means nothing was measured, so no number."""
    if not reading.energy_j:
        reading.energy_j, reading.valid = None, False
        reading.note = "counter did not advance over the window"
    elif reading.window_s is not None and reading.window_s < MIN_WINDOW_S:
        reading.valid = False
        reading.note = (
            f"window {reading.window_s:.3f} s is shorter than {MIN_WINDOW_S} s, "
            "the counter's update period makes this imprecise"
        )
    else:
        reading.valid = True
    return reading


def _is_not_supported(nvml: Any, err: Exception) -> bool:
    return getattr(err, "value", None) == getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", object())


def rapl_zones(root: Path = Path("/sys/class/powercap")) -> tuple[list[Path], list[Path]]:
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


class EnergyMeter(Meter[EnergyReading], Protocol):
    def idle_power_w(self, seconds: float) -> float | None: ...


def meter_for(
    device: Any,
    nvml: Any = None,
    interval_s: float = 0.01,
    rapl_root: Path = Path("/sys/class/powercap"),
) -> EnergyMeter:
    """The best meter for a torch device. `nvml` is pynvml unless a test passes a fake."""
    if device.type == "cuda":
        return _nvml_meter(device, nvml, interval_s)
    if device.type == "cpu":
        packages, drams = rapl_zones(rapl_root)
        if packages:
            return RaplMeter(packages, drams)
        return Unavailable(f"no readable RAPL package counter under {rapl_root}")
    return Unavailable(f"no energy source for device type {device.type}")


def _nvml_meter(device: Any, nvml: Any, interval_s: float) -> EnergyMeter:
    try:
        lib = nv.load(nvml)
        uuid = gpu_uuid(device)
        handle = nv.handle(lib, uuid)
    except nv.Unavailable as err:
        return Unavailable(str(err))
    mig = nv.read(lambda: lib.nvmlDeviceGetMigMode(handle)[0])
    if mig is True or mig == 1:
        return Unavailable("MIG is enabled: NVML reports whole-GPU energy, not this instance's")
    if others := other_processes(lib, handle):
        return Unavailable(
            f"another process (pid {', '.join(map(str, others))}) is using this "
            "GPU, so its energy would be counted too"
        )
    return NvmlMeter(lib, handle, interval_s)


def other_processes(nvml: Any, handle: Any) -> list[int]:
    """PIDs computing on the GPU other than this measuring process and the job that started it."""
    import os

    ours = {os.getpid(), os.getppid()}
    running = nv.read(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle))
    if isinstance(running, str):
        return []  # not readable here (containers often hide it): nothing to refuse on
    return sorted({p.pid for p in running} - ours)


def gpu_uuid(device: Any) -> str:
    """NVML's UUID string of a torch CUDA device: indices differ under CUDA_VISIBLE_DEVICES."""
    import torch

    uuid = str(torch.cuda.get_device_properties(device).uuid)
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
