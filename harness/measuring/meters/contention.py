"""Can this cell's timing be trusted? A meter around the timed window that looks for what makes a
number wrong without making it fail: on the CPU, threads that wanted a core and waited for one
(another process, oversubscription, a steal-happy hypervisor); on a GPU, clocks that dropped or
throttled, and heat.

Thresholds (documented in the README, exceeded -> timing_valid = false):
- CPU run-queue wait: the cell's threads spent more than 10% of their busy time waiting for a
  core (per-thread schedstat: the kernel's own account of runnable-but-not-running time);
- CPU time: the threads that worked got less than 50% of the CPU they could have used;
- hypervisor steal: more than 5% of the machine's CPU time went to other guests;
- GPU: a thermal, hardware-slowdown or power-brake throttle reason at either end of the window,
  or the SM clock at the end below 90% of the start.
The note always carries the evidence, valid or not: the numbers a reader needs to judge.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.measuring import nvml as nv
from harness.measuring.meters.base import Bench, Plug, Window

MAX_WAIT_SHARE = 0.10
MIN_CPU_SHARE = 0.50
MAX_STEAL_SHARE = 0.05
MIN_CLOCK_RATIO = 0.90

# NVML clocks event (throttle) reasons that mean the GPU ran slower than it would have.
GPU_SLOWDOWNS = {
    0x20: "software thermal slowdown",
    0x40: "hardware thermal slowdown",
    0x08: "hardware slowdown",
    0x80: "hardware power brake",
}
GPU_NOTED = {0x04: "software power cap", 0x02: "application clocks setting", 0x10: "sync boost"}


@dataclass
class TimingCheck:
    valid: bool
    note: str


def _tasks() -> dict[str, tuple[int, int]]:
    """Per thread of this process: (ns on a CPU, ns runnable but waiting for one)."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            run, wait, _ = (task / "schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        out[task.name] = (int(run), int(wait))
    return out


def _steal() -> tuple[int, int] | None:
    """(steal, total) jiffies of the whole machine, from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def _load() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class CpuContention:
    """Did the cell's threads get the CPU they asked for during the window?"""

    source = "cpu:schedstat+rusage+loadavg"

    def __init__(self, threads: int, cpus: int) -> None:
        self.threads, self.cpus = threads, cpus

    def begin(self) -> None:
        self._tasks, self._steal, self._load = _tasks(), _steal(), _load()
        self._usage = resource.getrusage(resource.RUSAGE_SELF)
        self._t0 = time.perf_counter()

    def end(self) -> TimingCheck:
        wall = time.perf_counter() - self._t0
        usage = resource.getrusage(resource.RUSAGE_SELF)
        tasks, steal, load = _tasks(), _steal(), _load()
        delta = {
            tid: (run - self._tasks.get(tid, (0, 0))[0], wait - self._tasks.get(tid, (0, 0))[1])
            for tid, (run, wait) in tasks.items()
        }
        busy = [(run, wait) for run, wait in delta.values() if run > 0.01 * wall * 1e9]
        cpu_s = (usage.ru_utime + usage.ru_stime) - (self._usage.ru_utime + self._usage.ru_stime)
        switches = usage.ru_nivcsw - self._usage.ru_nivcsw
        evidence = [
            f"cpu {cpu_s / wall:.2f} of {self.threads} threads",
            f"{switches / wall:.0f} involuntary switches/s",
            f"load {self._load} -> {load} on {self.cpus} cpus",
        ]
        problems = []
        if busy:
            wait_share = sum(w for _, w in busy) / max(sum(r + w for r, w in busy), 1)
            evidence.insert(1, f"run-queue wait {wait_share:.1%}")
            if wait_share > MAX_WAIT_SHARE:
                problems.append(
                    f"threads waited for a CPU {wait_share:.0%} of their busy time "
                    f"(> {MAX_WAIT_SHARE:.0%}): another process or too many threads"
                )
            used = sum(r for r, _ in busy) / 1e9 / (len(busy) * wall)
            if used < MIN_CPU_SHARE:
                problems.append(
                    f"working threads got {used:.0%} of the CPU they could use "
                    f"(< {MIN_CPU_SHARE:.0%})"
                )
        if steal is not None and self._steal is not None:
            ticks = steal[1] - self._steal[1]
            share = (steal[0] - self._steal[0]) / ticks if ticks > 0 else 0.0
            evidence.append(f"steal {share:.1%}")
            if share > MAX_STEAL_SHARE:
                problems.append(
                    f"hypervisor steal {share:.0%} of the machine (> {MAX_STEAL_SHARE:.0%})"
                )
        note = "; ".join(problems + evidence)
        return TimingCheck(not problems, note)


class GpuClocks:
    """Did the GPU keep its clocks during the window (no thermal or hardware slowdown)?"""

    source = "nvml:clocks_event_reasons+sm_clock+temperature"

    def __init__(self, nvml: Any, handle: Any) -> None:
        self.nvml, self.handle = nvml, handle

    def _state(self) -> dict[str, Any]:
        lib, h = self.nvml, self.handle
        reasons = nv.read(lambda: lib.nvmlDeviceGetCurrentClocksEventReasons(h))
        if nv.failed(reasons):  # drivers before 535 name it "throttle reasons"
            reasons = nv.read(lambda: lib.nvmlDeviceGetCurrentClocksThrottleReasons(h))
        return {
            "reasons": reasons,
            "sm": nv.read(lambda: lib.nvmlDeviceGetClockInfo(h, lib.NVML_CLOCK_SM)),
            "temp": nv.read(lambda: lib.nvmlDeviceGetTemperature(h, lib.NVML_TEMPERATURE_GPU)),
        }

    def begin(self) -> None:
        self._begin = self._state()

    def end(self) -> TimingCheck:
        start, stop = self._begin, self._state()
        problems, evidence = [], []
        for when, state in (("start", start), ("end", stop)):
            reasons = state["reasons"]
            if nv.failed(reasons):
                evidence.append(f"throttle reasons unreadable at {when}")
                continue
            slow = [name for bit, name in GPU_SLOWDOWNS.items() if int(reasons) & bit]
            noted = [name for bit, name in GPU_NOTED.items() if int(reasons) & bit]
            if slow:
                problems.append(f"{', '.join(slow)} at the window's {when}")
            if noted:
                evidence.append(f"{', '.join(noted)} at {when}")
        sm0, sm1 = start["sm"], stop["sm"]
        if not (nv.failed(sm0) or nv.failed(sm1)):
            evidence.append(f"SM clock {sm0} -> {sm1} MHz")
            if sm0 and sm1 < MIN_CLOCK_RATIO * sm0:
                problems.append(f"SM clock fell {sm0} -> {sm1} MHz (< {MIN_CLOCK_RATIO:.0%})")
        if not (nv.failed(start["temp"]) or nv.failed(stop["temp"])):
            evidence.append(f"{start['temp']} -> {stop['temp']} C")
        return TimingCheck(not problems, "; ".join(problems + evidence))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class TimingChecks:
    """The meter: the CPU check always, the GPU's clocks where NVML has the GPU; the timing is
    trusted only if every check passes, and the note keeps every check's evidence."""

    def __init__(self, checks: list[CpuContention | GpuClocks]) -> None:
        self.checks = checks
        self.verdicts: list[TimingCheck] = []

    @classmethod
    def make(cls, bench: Bench) -> TimingChecks:
        checks: list[CpuContention | GpuClocks] = [
            CpuContention(bench.cfg.threads or 1, usable_cpus())
        ]
        if bench.gpu is not None and bench.gpu.handle is not None:
            checks.append(GpuClocks(bench.gpu.nvml, bench.gpu.handle))
        return cls(checks)

    def begin(self) -> None:
        for check in self.checks:
            check.begin()

    def end(self) -> None:
        self.verdicts = [check.end() for check in self.checks]

    def fields(self, window: Window) -> dict[str, Any]:
        return {
            "timing_valid": all(v.valid for v in self.verdicts),
            "timing_note": "; ".join(v.note for v in self.verdicts if v.note),
        }


PLUG = Plug(
    "timing_checks", ("timing_valid", "timing_note"), ("cpu", "cuda"), "window", TimingChecks.make
)
