"""GPU energy: the NVML total-energy counter (mJ). It advances in steps (~100 ms apart on recent
GPUs), so a plain read can be one step stale at each end of the window: +-5% of a 2 s window.
Instead each end waits for the counter to step and the window starts there; at the end, the
energy of the last step after the window is taken off using the instant-power samples. What
remains uncertain is the time between the two reads around each step (about a millisecond),
recorded per row as `energy_resolution`; over 1% makes the energy invalid. The step period is
measured during the idle wait (and reported), never assumed. Beside the counter, a thread
samples power every `sample_interval_s` (the instant-power field NVML_FI_DEV_POWER_INSTANT where
the driver has it; otherwise nvmlDeviceGetPowerUsage, which on Ampere and newer is a 1-second
average, and says so) and integrates it over the same window: the cross-check, and the fallback
where there is no counter. Idle power is the counter's own increase over the idle wait.

Energy is refused when another process was on the GPU before the cell's own CUDA context
appeared (NVML lists host PIDs in containers, so the cell recognises itself by what appears, not
by PID), and invalid when a process appears during the window.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from harness.measuring import nvml as nv
from harness.measuring.meters.base import (
    MAX_RESOLUTION,
    EnergyMeter,
    EnergyReading,
    Unavailable,
    counter_delta,
)

NVML_COUNTER_WRAP = 2**64  # nvmlDeviceGetTotalEnergyConsumption is an unsigned 64-bit mJ count
POLL_S = 0.0005  # between counter reads while waiting for a step
STEP_TIMEOUT_S = 1.0  # a counter that has not stepped by then is not stepping: read it as is


class PowerSampler:
    """A thread reading power every `interval_s` (it sleeps between reads and NVML calls drop
    the GIL, so the launch thread is disturbed as little as Python allows); joules by the
    trapezoid rule over any span."""

    def __init__(self, nvml: Any, handle: Any, interval_s: float) -> None:
        self.nvml, self.handle, self.interval_s = nvml, handle, interval_s
        instant = nv.read(lambda: nvml.nvmlDeviceGetFieldValues(handle, [_INSTANT(nvml)]))
        self.instant = not nv.failed(instant) and getattr(instant[0], "nvmlReturn", 1) == 0
        self.source = (
            "nvml:power_instant_field" if self.instant else "nvml:power_usage (1 s average)"
        )
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watts(self) -> float:
        if self.instant:
            field = self.nvml.nvmlDeviceGetFieldValues(self.handle, [_INSTANT(self.nvml)])[0]
            return float(field.value.uiVal) / 1e3
        return float(self.nvml.nvmlDeviceGetPowerUsage(self.handle)) / 1e3

    def _run(self) -> None:
        while not self._stop.is_set():
            reading = nv.read(self.watts)
            if not nv.failed(reading):
                self.samples.append((time.perf_counter(), float(reading)))
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        reading = nv.read(self.watts)
        if not nv.failed(reading):
            self.samples.append((time.perf_counter(), float(reading)))

    def joules(self, t0: float, t1: float) -> float | None:
        """Energy over [t0, t1] from the samples (held constant past the outermost ones)."""
        points = sorted(self.samples)
        if len(points) < 2 or t1 <= t0:
            return None
        total = 0.0
        for (a, pa), (b, pb) in zip(points, points[1:], strict=False):
            lo, hi = max(a, t0), min(b, t1)
            if hi > lo:
                slope = (pb - pa) / (b - a) if b > a else 0.0
                total += (hi - lo) * (pa + slope * ((lo + hi) / 2 - a))
        first, last = points[0], points[-1]
        total += max(0.0, min(first[0], t1) - t0) * first[1]
        total += max(0.0, t1 - max(last[0], t0)) * last[1]
        return total


def _INSTANT(nvml: Any) -> int:  # noqa: N802  (NVML's constant, from the module that has it)
    return int(getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", 186))


class GpuProcesses:
    """Which processes NVML lists on the GPU, seen from the measuring process. Taken before the
    cell's CUDA context exists and again once it does, so the cell recognises its own entry by
    its appearance: in a container NVML shows host PIDs, which match nothing here."""

    def __init__(self, nvml: Any, handle: Any) -> None:
        self.nvml, self.handle = nvml, handle
        self.before = self.snapshot()
        self.ours: set[int] = set()

    def snapshot(self) -> set[int] | str:
        running = nv.read(lambda: self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle))
        return running if isinstance(running, str) else {p.pid for p in running}

    def context_made(self) -> None:
        """Call once this process's CUDA context exists."""
        now = self.snapshot()
        if isinstance(now, set) and isinstance(self.before, set):
            self.ours = now - self.before

    def foreign_at_start(self) -> set[int]:
        return self.before if isinstance(self.before, set) else set()

    def unreadable(self) -> str:
        return self.before if isinstance(self.before, str) else ""


class NvmlMeter:
    """One GPU through NVML: the energy counter, tick-aligned at both ends, and power samples."""

    def __init__(self, nvml: Any, handle: Any, interval_s: float, processes: GpuProcesses) -> None:
        self.nvml, self.handle, self.processes = nvml, handle, processes
        self.sampler = PowerSampler(nvml, handle, interval_s)
        probe = nv.read(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        self.has_counter = not nv.failed(probe)
        self.source = "nvml:total_energy_counter" if self.has_counter else self.sampler.source
        self.period_s: float | None = None
        self.idle_w: float | None = None  # from the counter, during the idle wait

    def _counter(self) -> int:
        return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def _step(self) -> tuple[int, float, float] | None:
        """Wait for the counter to step: (value, time of the read that saw it, time since the
        read before it). None if it did not step within STEP_TIMEOUT_S."""
        first = self._counter()
        last_read = time.perf_counter()
        deadline = last_read + max(STEP_TIMEOUT_S, 3 * (self.period_s or 0))
        while True:
            value = self._counter()
            now = time.perf_counter()
            if value != first:
                return value, now, now - last_read
            if now > deadline:
                return None
            last_read = now
            time.sleep(POLL_S)

    def idle_power_w(self, seconds: float) -> float | None:
        """Idle power from the counter's own steps over `seconds`; the step period with it."""
        if not self.has_counter:
            self.sampler.start()
            time.sleep(seconds)
            self.sampler.stop()
            joules = self.sampler.joules(self.sampler.samples[0][0], self.sampler.samples[-1][0])
            span = self.sampler.samples[-1][0] - self.sampler.samples[0][0]
            return joules / span if joules is not None and span > 0 else None
        steps: list[tuple[float, int]] = []
        end = time.perf_counter() + seconds
        previous = self._counter()
        while time.perf_counter() < end:
            value = self._counter()
            if value != previous:
                steps.append((time.perf_counter(), value))
                previous = value
            time.sleep(POLL_S)
        if len(steps) >= 3:
            gaps = sorted(b[0] - a[0] for a, b in zip(steps, steps[1:], strict=False))
            self.period_s = gaps[len(gaps) // 2]
        if len(steps) < 2:
            return None
        joules = counter_delta(steps[0][1], steps[-1][1], NVML_COUNTER_WRAP) / 1e3
        self.idle_w = joules / (steps[-1][0] - steps[0][0])
        return self.idle_w

    def begin(self) -> None:
        self.sampler.start()
        self._procs = self.processes.snapshot()
        self._start = self._step() if self.has_counter else None
        self._raw0 = None if self._start is not None or not self.has_counter else self._counter()
        self._t0 = time.perf_counter()

    def end(self) -> EnergyReading:
        t1 = time.perf_counter()
        stop = self._step() if self.has_counter else None
        raw1 = None if stop is not None or not self.has_counter else self._counter()
        self.sampler.stop()
        window = t1 - self._t0
        sampled = self.sampler.joules(self._t0, t1)
        reading = EnergyReading(self.source, window_s=window)
        notes = []
        if self.has_counter:
            reading.sampled_energy_j = sampled
            reading.energy_j, reading.resolution, note = self._counter_energy(stop, raw1, t1)
            notes += [note] if note else []
        else:
            reading.energy_j = sampled
            reading.resolution = self.sampler.interval_s / window if window else None
        reading.valid = reading.energy_j is not None and reading.energy_j > 0
        if reading.energy_j is not None and reading.energy_j <= 0:
            reading.energy_j = None
            notes.append("counter did not advance over the window")
        if reading.resolution is not None and reading.resolution > MAX_RESOLUTION:
            reading.valid = False
            notes.append(
                f"counter resolution +-{reading.resolution:.1%} exceeds {MAX_RESOLUTION:.0%}: "
                "lengthen timing.window_s"
            )
        after = self.processes.snapshot()
        if isinstance(after, set) and isinstance(self._procs, set) and after - self._procs:
            reading.valid = False
            notes.append(f"process {sorted(after - self._procs)} appeared on this GPU meanwhile")
        if self.processes.unreadable():
            notes.append(f"process list {self.processes.unreadable()}: sharing not checked")
        notes.append(f"power samples: {self.sampler.source}")
        if self.period_s:
            notes.append(f"counter step {self.period_s * 1e3:.0f} ms")
        reading.note = "; ".join(notes)
        return reading

    def _counter_energy(
        self, stop: tuple[int, float, float] | None, raw1: int | None, t1: float
    ) -> tuple[float | None, float | None, str]:
        """Joules over the window from the counter, its resolution, and a note if degraded."""
        start = self._start
        if start is not None and stop is not None:
            joules = counter_delta(start[0], stop[0], NVML_COUNTER_WRAP) / 1e3
            tail_s = stop[1] - t1
            if self.sampler.instant:  # the tail's own power, sampled
                tail = self.sampler.joules(t1, stop[1]) or 0.0
                tail_error = 0.1 * tail
            else:  # a 1-second average lags: the tail was somewhere between busy and idle
                busy = joules / max(stop[1] - start[1], 1e-9)
                idle = self.idle_w if self.idle_w is not None else 0.0
                tail, tail_error = tail_s * (busy + idle) / 2, tail_s * abs(busy - idle) / 2
            energy = joules - tail
            power = energy / max(t1 - self._t0, 1e-9)
            bound = power * (start[2] + stop[2]) + tail_error
            return energy, bound / energy if energy > 0 else None, ""
        # the counter did not step: raw reads, each up to one step stale
        v0 = start[0] if start is not None else self._raw0
        v1 = stop[0] if stop is not None else raw1
        if v0 is None or v1 is None:
            return None, None, "counter unreadable"
        energy = counter_delta(v0, v1, NVML_COUNTER_WRAP) / 1e3
        period = self.period_s or 0.1
        window = max(t1 - self._t0, 1e-9)
        unaligned = (start is None) + (stop is None)
        why = "" if self.period_s else " (step period not measured: 100 ms assumed)"
        return energy, unaligned * period / window, f"counter not step-aligned{why}"


def gpu_meter(
    nvml: Any, handle: Any, uuid: str, processes: GpuProcesses, interval_s: float
) -> EnergyMeter:
    """The GPU's meter, or the reason there is none: MIG, or another process on the GPU."""
    if uuid.startswith("MIG-"):
        return Unavailable(
            f"{uuid} is a MIG instance: NVML's energy and power are the whole GPU's, "
            "shared with the other instances"
        )
    if foreign := processes.foreign_at_start():
        return Unavailable(
            f"another process (NVML pid {', '.join(map(str, sorted(foreign)))}) was on this "
            "GPU before the cell began, so its energy would be counted too"
        )
    return NvmlMeter(nvml, handle, interval_s, processes)
