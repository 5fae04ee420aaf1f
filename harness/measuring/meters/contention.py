"""Can this cell's timing be trusted? A meter around the timed window that looks for what makes a
number wrong without making it fail: on the CPU, threads that wanted a core and waited for one
(another process, oversubscription, a steal-happy hypervisor); on a GPU, clocks that dropped or
throttled, and heat.

Thresholds (documented in the README, exceeded -> timing_valid = false):
- CPU run-queue wait: the cell's threads spent more than 10% of their busy time waiting for a
  core (per-thread schedstat: the kernel's own account of runnable-but-not-running time);
- CPU time: the threads that worked got less than 50% of the CPU they could have used;
- hypervisor steal: more than 5% of the machine's CPU time went to other guests;
- GPU: a thermal, hardware-slowdown or power-brake reason at the window's end (read first, the
  GPU still loaded); the thermal limit holding the clocks down more than 1% of the window
  (NVML's violation counters); more than 10% of the window's SM clock samples below 90% of the
  highest.
The note always carries the evidence, valid or not: the numbers a reader needs to judge.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from harness.measuring import nvml as nv
from harness.measuring.meters.base import Bench, Plug, Window

MAX_WAIT_SHARE = 0.10
MIN_CPU_SHARE = 0.50
MAX_STEAL_SHARE = 0.05
MIN_CLOCK_RATIO = 0.90
MAX_LOW_CLOCK_SHARE = 0.10  # of the window's SM clock samples below MIN_CLOCK_RATIO of the top
MAX_THERMAL_SHARE = 0.01  # of the window the thermal limit may hold the clocks down
MIN_BUSY_SHARE = 0.80  # of the window the GPU ran kernels, below which a cell is launch-bound
CLOCK_SAMPLE_S = 0.05
# nvmlPerfPolicyType_t: how long each limit held the clocks below application clocks
VIOLATION_POLICIES = {"power": 0, "thermal": 1}

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

    def __init__(self, threads: int, cpus: int, judged: bool = True) -> None:
        """`judged`: whether CPU contention can make the timing untrustworthy (a CPU cell); for
        a GPU cell, whose launch thread mostly waits for the GPU, it is evidence only."""
        self.threads, self.cpus, self.judged = threads, cpus, judged

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
        if not self.judged and problems:
            evidence.append(f"not judged on a GPU cell: {'; '.join(problems)}")
            problems = []
        note = "; ".join(problems + evidence)
        return TimingCheck(not problems, note)


class ClockSampler:
    """A thread reading the SM clock and NVML's utilisation every `interval_s` during the
    window: a dip in the middle shows here, where the two ends cannot see it."""

    def __init__(self, read: Any, interval_s: float, busy: Any = None) -> None:
        self.read, self.interval_s, self.busy = read, interval_s, busy
        self.samples: list[int] = []
        self.busy_samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self.read()
            if not nv.failed(value):
                self.samples.append(int(value))
            busy = self.busy() if self.busy is not None else "unavailable: not asked"
            if not nv.failed(busy):
                self.busy_samples.append(float(busy))
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join()
        return self.samples


class GpuClocks:
    """Did the GPU keep its clocks during the window? Judged by what happened during it: NVML's
    violation counters (cumulative ns the power or thermal limit held the clocks below their
    application clocks) at both ends, the SM clock sampled through the window, and the clock
    event reasons read at the window's end before anything else ends (ended first by the meter
    table), while the GPU is still loaded: read later, an idle GPU reports idle and P-state
    reasons that say nothing about the window. The start's reasons are evidence only: the GPU
    is waiting for the window then, and NVML may report a hardware slowdown during a P-state
    change."""

    source = "nvml:violation_counters+sm_clock_samples+clocks_event_reasons+temperature"

    def __init__(self, nvml: Any, handle: Any, interval_s: float = CLOCK_SAMPLE_S) -> None:
        self.nvml, self.handle, self.interval_s = nvml, handle, interval_s
        self.busy_share: float | None = None

    def _reasons(self) -> Any:
        return nv.clock_reasons(self.nvml, self.handle)

    def _sm(self) -> Any:
        return nv.read(
            lambda: self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_SM)
        )

    def _busy(self) -> Any:
        """The share of NVML's last sample period in which a kernel ran (0..1)."""
        return nv.read(lambda: self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu / 100)

    def _temp(self) -> Any:
        lib, h = self.nvml, self.handle
        return nv.read(lambda: lib.nvmlDeviceGetTemperature(h, lib.NVML_TEMPERATURE_GPU))

    def _violations(self) -> dict[str, Any]:
        def violation_ns(policy: int) -> int:
            return int(self.nvml.nvmlDeviceGetViolationStatus(self.handle, policy).violationTime)

        return {
            name: nv.read(partial(violation_ns, policy))
            for name, policy in VIOLATION_POLICIES.items()
        }

    def begin(self) -> None:
        self._start = {"reasons": self._reasons(), "temp": self._temp()}
        self._violations0 = self._violations()
        self._sampler = ClockSampler(self._sm, self.interval_s, self._busy)
        self._sampler.start()
        self._t0 = time.perf_counter()

    def end(self) -> TimingCheck:
        reasons, temp = self._reasons(), self._temp()  # first: the GPU is still loaded
        wall_ns = (time.perf_counter() - self._t0) * 1e9
        clocks = self._sampler.stop()
        violations = self._violations()
        problems: list[str] = []
        evidence: list[str] = []
        if nv.failed(reasons):
            evidence.append("clock event reasons unreadable at the end")
        else:
            slow = [name for bit, name in GPU_SLOWDOWNS.items() if int(reasons) & bit]
            noted = [name for bit, name in GPU_NOTED.items() if int(reasons) & bit]
            if slow:
                problems.append(f"{', '.join(slow)} at the window's end")
            if noted:
                evidence.append(f"{', '.join(noted)} at the end")
        start = self._start["reasons"]
        if not nv.failed(start) and int(start) & sum(GPU_SLOWDOWNS):
            names = [name for bit, name in GPU_SLOWDOWNS.items() if int(start) & bit]
            evidence.append(f"{', '.join(names)} before the window (idle GPU; not judged)")
        for name, before in self._violations0.items():
            after = violations[name]
            if nv.failed(before) or nv.failed(after):
                evidence.append(f"{name} violation counter unreadable")
                continue
            share = (after - before) / wall_ns if wall_ns > 0 else 0.0
            evidence.append(f"{name} limit held clocks down {share:.1%} of the window")
            if name == "thermal" and share > MAX_THERMAL_SHARE:
                problems.append(
                    f"the thermal limit held clocks down {share:.0%} of the window "
                    f"(> {MAX_THERMAL_SHARE:.0%})"
                )
        if clocks:
            top = max(clocks)
            low = [c for c in clocks if c < MIN_CLOCK_RATIO * top]
            evidence.append(f"SM clock {min(clocks)}..{top} MHz over {len(clocks)} samples")
            if len(low) > MAX_LOW_CLOCK_SHARE * len(clocks):
                problems.append(
                    f"SM clock below {MIN_CLOCK_RATIO:.0%} of its {top} MHz in {len(low)} of "
                    f"{len(clocks)} samples"
                )
        if not (nv.failed(self._start["temp"]) or nv.failed(temp)):
            evidence.append(f"{self._start['temp']} -> {temp} C")
        busy = self._sampler.busy_samples
        self.busy_share = sum(busy) / len(busy) if busy else None
        if self.busy_share is not None and self.busy_share < MIN_BUSY_SHARE:
            evidence.insert(
                0,
                f"launch-bound: the GPU ran kernels {self.busy_share:.0%} of the window, so this "
                "times Python's kernel launches more than the GPU (compile=true "
                "compile_mode=reduce-overhead replays CUDA graphs)",
            )
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
        on_cpu = bench.device.type == "cpu"
        checks: list[CpuContention | GpuClocks] = [
            CpuContention(bench.cfg.threads or 1, usable_cpus(), judged=on_cpu)
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
        busy = [c.busy_share for c in self.checks if isinstance(c, GpuClocks)]
        return {
            "timing_valid": all(v.valid for v in self.verdicts),
            "timing_note": "; ".join(v.note for v in self.verdicts if v.note),
            "gpu_busy_share": busy[0] if busy else None,
        }


PLUG = Plug(
    "timing_checks",
    ("timing_valid", "timing_note", "gpu_busy_share"),
    ("cpu", "cuda"),
    "window",
    TimingChecks.make,
)
