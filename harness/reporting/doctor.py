"""`attnbench-doctor`: is this machine fit to measure on? Run it before trusting any number.

It checks what decides whether a number is right, prints a table and a verdict, and exits 0 when
nothing it can see would make a measurement untrustworthy, 1 when something would (a `fail`
line says what and why). What it cannot see is listed, not passed over. Every sweep stores its
output beside results.csv (harness.data.store); the report shows it.

GPU, through NVML: driver and NVML versions; per GPU the energy counter and its measured step
(with --power-test, how much of each step the power sensor sees, from a pulsed load),
the instant-power field, other compute processes, whether a process can recognise itself in the
process list (containers show host PIDs), persistence mode, clocks against their maximum,
application clocks and power limit against their defaults, throttle reasons, temperature, MIG.
CPU: RAPL, the frequency governor, the CPUs this process may use and how busy they are, steal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import paths
from harness.measuring import nvml as nv
from harness.measuring.meters.base import MAX_RESOLUTION
from harness.measuring.meters.contention import GPU_SLOWDOWNS, usable_cpus

STEP_PROBE_S = 1.0  # how long the counter is watched to measure its step
BUSY_FAIL = 0.10  # other work on this process's CPUs beyond this share fails
READ_GAP_S = 0.002  # a tick-aligned read is this uncertain at each end (measured ~1 ms)


@dataclass
class Finding:
    area: str
    check: str
    value: str
    status: str  # ok | warn | fail | unknown
    why: str = ""


def _status_line(findings: list[Finding]) -> tuple[int, str]:
    fails = [f for f in findings if f.status == "fail"]
    if fails:
        named = "; ".join(f"{f.area} {f.check}: {f.why}" for f in fails)
        return 1, f"UNTRUSTWORTHY: {named}"
    warns = sum(f.status == "warn" for f in findings)
    return 0, f"OK{f' with {warns} warnings' if warns else ''}: numbers measured now can be trusted"


# ---------------------------------------------------------------- CPU


def _cpu_times() -> dict[int, tuple[int, int]]:
    """Per CPU: (busy, total) jiffies from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            values = [int(x) for x in fields[:8]]
            idle = values[3] + values[4]
            out[int(name[3:])] = (sum(values) - idle, sum(values))
    return out


def cpu_findings(
    sample_s: float = 1.0, rapl_root: Path = Path("/sys/class/powercap")
) -> list[Finding]:
    from harness.measuring.meters.rapl import rapl_zones

    found = []
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 1))
    found.append(Finding("cpu", "usable CPUs", f"{len(cpus)} ({','.join(map(str, cpus))})", "ok"))
    before = _cpu_times()
    time.sleep(sample_s)
    after = _cpu_times()
    busy = [
        (after[c][0] - before[c][0]) / max(after[c][1] - before[c][1], 1)
        for c in cpus
        if c in before and c in after
    ]
    share = sum(busy) / len(busy) if busy else 0.0
    found.append(
        Finding(
            "cpu",
            "busy with other work",
            f"{share:.0%} over {sample_s:g} s",
            "fail" if share > BUSY_FAIL else "ok",
            f"other processes use {share:.0%} of this process's CPUs: CPU timings would be "
            "slowed and flagged"
            if share > BUSY_FAIL
            else "",
        )
    )
    load = Path("/proc/loadavg").read_text().split()[0]
    found.append(Finding("cpu", "load average (1 min)", load, "ok"))
    governors = set()
    for c in cpus:
        path = Path(f"/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor")
        with contextlib.suppress(OSError):
            governors.add(path.read_text().strip())
    if governors:
        steady = governors == {"performance"}
        found.append(
            Finding(
                "cpu",
                "frequency governor",
                ",".join(sorted(governors)),
                "ok" if steady else "warn",
                "" if steady else "clock speed follows load: warm-up matters more",
            )
        )
    else:
        found.append(
            Finding(
                "cpu",
                "frequency governor",
                "not exposed",
                "unknown",
                "no cpufreq here (a VM?): frequency changes cannot be seen",
            )
        )
    packages, _ = rapl_zones(rapl_root)
    found.append(
        Finding(
            "cpu",
            "RAPL energy counter",
            f"{len(packages)} package zone(s)" if packages else "not readable",
            "ok" if packages else "unknown",
            "" if packages else f"no readable {rapl_root}/intel-rapl:*: CPU energy is not measured",
        )
    )
    return found


# ---------------------------------------------------------------- GPU


def counter_step(nvml: Any, handle: Any, seconds: float | None = None) -> float | None:
    """The energy counter's measured update period, from the gaps between its steps (watched
    for `seconds`, STEP_PROBE_S unless given)."""
    steps, end = [], time.perf_counter() + (STEP_PROBE_S if seconds is None else seconds)
    previous = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    while time.perf_counter() < end:
        value = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        if value != previous:
            steps.append(time.perf_counter())
            previous = value
        time.sleep(0.0005)
    gaps = sorted(b - a for a, b in zip(steps, steps[1:], strict=False))
    return gaps[len(gaps) // 2] if gaps else None


COVERAGE_WARN = 0.9  # a power sensor that sees less of each counter step than this is warned of
PULSES = 24  # short loads, each a little later in the counter's step than the one before


@dataclass(frozen=True)
class Coverage:
    """What a pulse test found: the share of each counter step the power sensor sees, from
    the most a pulse was over-counted (None: not measurable), and the idle and load powers
    that pulses were judged against."""

    share: float | None
    idle_w: float
    load_w: float
    pulses: int


def sensor_coverage(
    nvml: Any, handle: Any, burst: Callable[[float], None], step_s: float, pulses: int = PULSES
) -> Coverage:
    """Measure how much of each energy-counter step the power sensor samples, with a known
    square-wave load (`burst(seconds)` keeps the GPU busy that long). A sensor that sees all
    of a step counts a short pulse by its length wherever it falls; one that sees a share d
    counts it 1/d times too much when it falls in the sampled part and not at all otherwise
    (A100/H100: about 25%, arXiv 2312.02741). So: idle and full-load power from whole steps,
    then `pulses` pulses of a tenth of a step, spaced a little more than a step apart so that
    they sweep every phase of it; the counted power of a step holding one whole pulse, over
    what that pulse's time alone would give (full coverage: 1), peaks at 1/d."""
    stamps: list[tuple[float, int]] = []
    done = threading.Event()

    def watch() -> None:  # every counter step: (when it was seen, the counter)
        last = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        while not done.is_set():
            value = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            if value != last:
                stamps.append((time.perf_counter(), value))
                last = value
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    on: list[tuple[float, float]] = []  # when the GPU was loaded
    try:
        time.sleep(4 * step_s)
        idle_until = time.perf_counter()
        start = time.perf_counter()
        burst(5 * step_s)
        on.append((start, time.perf_counter()))
        time.sleep(2 * step_s)
        first = time.perf_counter()
        spacing, width = step_s * (1 + 1 / pulses), step_s / 10
        for i in range(pulses):
            time.sleep(max(0.0, first + i * spacing - time.perf_counter()))
            start = time.perf_counter()
            burst(width)
            on.append((start, time.perf_counter()))
        time.sleep(2 * step_s)
    finally:
        done.set()
        watcher.join()

    steps = [
        (t0, t1, (e1 - e0) / 1e3 / (t1 - t0))
        for (t0, e0), (t1, e1) in zip(stamps, stamps[1:], strict=False)
    ]
    idle = [w for t0, t1, w in steps if t1 <= idle_until]
    load_start, load_end = on[0]
    load = [w for t0, t1, w in steps if t0 >= load_start + step_s and t1 <= load_end]
    if not idle or not load or max(load) <= max(idle):
        return Coverage(None, float("nan"), float("nan"), pulses)
    idle_w, load_w = statistics.median(idle), statistics.median(load)
    margin = step_s / 50  # a step's ends are seen up to a poll late: pulses clear of them
    seen = []
    for t0, t1, w in steps:
        touching = [(a, b) for a, b in on if b > t0 and a < t1]
        if len(touching) == 1 and t0 + margin <= touching[0][0] < touching[0][1] <= t1 - margin:
            pulse = touching[0][1] - touching[0][0]
            seen.append((w - idle_w) / (load_w - idle_w) / (pulse / (t1 - t0)))
    peak = max(seen, default=0.0)
    share = None if peak <= 0 else min(1.0, 1 / peak)
    return Coverage(share, idle_w, load_w, pulses)


def coverage_finding(name: str, found: Coverage, step_s: float) -> Finding:
    """The pulse test as a doctor's line."""
    if found.share is None:
        return Finding(
            name,
            "power sensor coverage",
            "not measurable",
            "unknown",
            "the load did not raise the counted power above idle",
        )
    part = found.share < COVERAGE_WARN
    return Finding(
        name,
        "power sensor coverage",
        f"{found.share:.0%} of each {step_s * 1e3:.0f} ms step ({found.pulses} pulses, idle "
        f"{found.idle_w:.0f} W, load {found.load_w:.0f} W)",
        "warn" if part else "ok",
        "a load that changes within a step is counted by where it falls: energy is a sample, "
        "beyond energy_resolution"
        if part
        else "",
    )


def gpu_burst(index: int) -> Callable[[float], None]:
    """A load for the pulse test: back-to-back matrix products on cuda:`index` for the time
    asked, synchronised every few so a pulse ends when asked."""
    import torch

    device = torch.device("cuda", index)
    a = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)

    def burst(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            for _ in range(4):
                a @ a
            torch.cuda.synchronize(device)

    burst(0.05)  # the first products pay for the kernels' start-up
    return burst


PROBE = (
    "import sys, torch; torch.empty(1, device=f'cuda:{sys.argv[1]}'); "
    "print('ready', flush=True); sys.stdin.read()"
)
PROBE_TIMEOUT_S = 60.0


def sees_itself(
    nvml: Any, handle: Any, index: int, code: str = PROBE, timeout_s: float = PROBE_TIMEOUT_S
) -> Finding:
    """Start a process that makes a CUDA context on the GPU (its CUDA index, in PCI order as
    NVML's) and see how it shows up in NVML; a probe that does not start in `timeout_s` is
    reported, not waited for."""
    before = nv.read(lambda: {p.pid for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)})
    if isinstance(before, str):
        return Finding(
            "gpu",
            "process list",
            before,
            "warn",
            "sharing with another job cannot be checked; energy is measured without that check",
        )
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", code, str(index)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ | {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"},
        )
    except OSError as err:
        return Finding("gpu", "process list", f"could not start a probe: {err}", "unknown")
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], timeout_s)
        if not ready:
            return Finding(
                "gpu",
                "process list",
                f"a probe made no CUDA context within {timeout_s:.0f} s",
                "unknown",
                "sharing with another job was not checked",
            )
        child.stdout.readline()
        after = {p.pid for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)}
    finally:
        child.kill()
        child.wait()
    new = after - before
    if child.pid in new:
        return Finding("gpu", "process list", "a process sees itself under its own PID", "ok")
    if new:
        return Finding(
            "gpu",
            "process list",
            f"a new process appears as PID {sorted(new)}, not {child.pid}",
            "ok",
            "host PIDs (a container): cells recognise themselves by what appears, not by PID",
        )
    return Finding(
        "gpu",
        "process list",
        "a new CUDA context does not appear",
        "warn",
        "sharing with another job cannot be checked here",
    )


Burst = Callable[[int], Callable[[float], None]]  # a CUDA index -> a load of that GPU


def gpu_findings(
    nvml: Any = None, probe_self: bool = True, power_test: Burst | None = None
) -> tuple[list[Finding], list[str]]:
    """Findings for every GPU this process may use (CUDA_VISIBLE_DEVICES, mapped to NVML by
    UUID: another job's GPU on a shared node is not ours to judge), and what could not be
    seen. With `power_test`, the power sensor's coverage is measured with that load."""
    try:
        lib = nv.load(nvml)
    except nv.Unavailable as err:
        return [], [f"GPU: {err}; no GPU checks"]
    found = [
        Finding(
            "gpu", "driver", str(nv.read(lambda: nv.text(lib.nvmlSystemGetDriverVersion()))), "ok"
        ),
        Finding("gpu", "NVML", str(nv.read(lambda: nv.text(lib.nvmlSystemGetNVMLVersion()))), "ok"),
    ]
    try:
        visible = nv.visible_gpus(lib)
    except Exception as err:  # noqa: BLE001  (an old driver's mismatch is not an NVMLError)
        return found, [f"GPU: cannot list the GPUs: {err}"]
    if not visible:
        return found, ["GPU: NVML lists no GPU this process may use"]
    for index, uuid in visible:  # CUDA_VISIBLE_DEVICES's GPUs, not every GPU of the node
        name = f"cuda:{index}"
        try:
            handle = nv.handle(lib, uuid)
        except nv.Unavailable as err:
            found.append(Finding(name, "name / UUID", str(err), "unknown"))
            continue

        def read(fn: Any, handle: Any = handle) -> Any:
            return nv.read(lambda: fn(handle))

        found.append(
            Finding(
                name,
                "name / UUID",
                f"{nv.text(read(lib.nvmlDeviceGetName))} {nv.text(read(lib.nvmlDeviceGetUUID))}",
                "ok",
            )
        )
        counter = read(lib.nvmlDeviceGetTotalEnergyConsumption)
        step = None if nv.failed(counter) else counter_step(lib, handle)
        if nv.failed(counter):
            found.append(
                Finding(
                    name,
                    "energy counter",
                    str(counter),
                    "warn",
                    "energy falls back to power sampling",
                )
            )
        else:
            needed = (
                ""
                if step is None
                else (
                    f"; for {MAX_RESOLUTION:.0%}: {2 * READ_GAP_S / MAX_RESOLUTION:.1f} s with "
                    "step-aligned reads "
                    f"(attnbench's), {2 * step / MAX_RESOLUTION:.0f} s with plain reads"
                )
            )
            found.append(
                Finding(
                    name,
                    "energy counter step",
                    f"{step * 1e3:.0f} ms{needed}" if step else "did not step in 1 s",
                    "ok" if step else "warn",
                    "" if step else "idle board: retry under load",
                )
            )
        instant_id = getattr(lib, "NVML_FI_DEV_POWER_INSTANT", 186)
        field = read(lambda h, i=instant_id: lib.nvmlDeviceGetFieldValues(h, [i]))
        instant = not nv.failed(field) and getattr(field[0], "nvmlReturn", 1) == 0
        found.append(
            Finding(
                name,
                "instant power field",
                "yes" if instant else "no",
                "ok" if instant else "warn",
                "" if instant else "samples are the 1 s average power",
            )
        )
        others = read(lib.nvmlDeviceGetComputeRunningProcesses)
        if nv.failed(others):
            found.append(Finding(name, "other processes", str(others), "unknown", "not readable"))
        else:
            pids = sorted(p.pid for p in others)
            found.append(
                Finding(
                    name,
                    "other processes",
                    ", ".join(map(str, pids)) or "none",
                    "fail" if pids else "ok",
                    "another process on the GPU: its energy would count, timings would be slowed"
                    if pids
                    else "",
                )
            )
        if probe_self:
            found.append(sees_itself(lib, handle, index))
        persistence = read(lib.nvmlDeviceGetPersistenceMode)
        found.append(
            Finding(
                name,
                "persistence mode",
                str(persistence),
                "ok" if persistence == 1 else "warn",
                "" if persistence == 1 else "driver reloads between jobs: first cell slower",
            )
        )
        sm, sm_max = (
            read(lambda h: lib.nvmlDeviceGetClockInfo(h, lib.NVML_CLOCK_SM)),
            read(lambda h: lib.nvmlDeviceGetMaxClockInfo(h, lib.NVML_CLOCK_SM)),
        )
        found.append(Finding(name, "SM clock now / max", f"{sm} / {sm_max} MHz", "ok"))
        app, app_default = (
            read(lambda h: lib.nvmlDeviceGetApplicationsClock(h, lib.NVML_CLOCK_SM)),
            read(lambda h: lib.nvmlDeviceGetDefaultApplicationsClock(h, lib.NVML_CLOCK_SM)),
        )
        changed = not nv.failed(app) and not nv.failed(app_default) and app != app_default
        found.append(
            Finding(
                name,
                "application clocks",
                f"{app} (default {app_default})",
                "warn" if changed else "ok",
                "changed from default" if changed else "",
            )
        )
        limit, default = (
            read(lib.nvmlDeviceGetPowerManagementLimit),
            read(lib.nvmlDeviceGetPowerManagementDefaultLimit),
        )
        capped = not nv.failed(limit) and not nv.failed(default) and limit != default
        found.append(
            Finding(
                name,
                "power limit",
                f"{limit} mW (default {default})",
                "warn" if capped else "ok",
                "changed from default" if capped else "",
            )
        )
        reasons = nv.clock_reasons(lib, handle)
        slow = (
            [] if nv.failed(reasons) else [n for b, n in GPU_SLOWDOWNS.items() if int(reasons) & b]
        )
        found.append(
            Finding(
                name,
                "throttle reasons now",
                ", ".join(slow) or str(reasons),
                "fail" if slow else "ok",
                "the GPU is slowing itself" if slow else "",
            )
        )
        temp = read(lambda h: lib.nvmlDeviceGetTemperature(h, lib.NVML_TEMPERATURE_GPU))
        found.append(Finding(name, "temperature", f"{temp} C", "ok"))
        mig = read(lambda h: lib.nvmlDeviceGetMigMode(h)[0])
        found.append(
            Finding(
                name,
                "MIG",
                str(mig),
                "warn" if mig == 1 else "ok",
                "MIG slices: energy is the whole GPU's, so it is not reported" if mig == 1 else "",
            )
        )
        if power_test is not None and step:  # last: its CUDA context would be "another process"
            test = sensor_coverage(lib, handle, power_test(index), step)
            found.append(coverage_finding(name, test, step))
    return found, []


def examine(
    sample_s: float = 1.0,
    nvml: Any = None,
    probe_self: bool = True,
    power_test: Burst | None = None,
) -> dict[str, Any]:
    gpu, unseen = gpu_findings(nvml, probe_self, power_test)
    findings = gpu + cpu_findings(sample_s)
    unseen += [f"{f.area} {f.check}: {f.why}" for f in findings if f.status == "unknown"]
    code, verdict = _status_line(findings)
    return {
        "findings": [asdict(f) for f in findings],
        "not_seen": unseen,
        "verdict": verdict,
        "exit_code": code,
        "usable_cpus": usable_cpus(),
    }


def render(result: dict[str, Any]) -> str:
    rows = [("area", "check", "value", "status", "why")] + [
        (f["area"], f["check"], f["value"], f["status"], f["why"]) for f in result["findings"]
    ]
    widths = [min(max(len(r[i]) for r in rows), 60) for i in range(4)]
    lines = [
        "  ".join(str(v).ljust(w)[:w] for v, w in zip(r, widths, strict=False)) + "  " + r[4]
        for r in rows
    ]
    lines += [f"not seen: {item}" for item in result["not_seen"]]
    lines.append(f"attnbench-doctor: {result['verdict']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="attnbench-doctor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"attnbench {paths.version()}")
    parser.add_argument("--sample-s", type=float, default=1.0, help="CPU load sampling time")
    parser.add_argument("--json", type=Path, help="also write the findings as JSON")
    parser.add_argument(
        "--power-test",
        action="store_true",
        help="measure how much of each energy-counter step the power sensor sees, with a "
        "pulsed load on each GPU (about 5 s a GPU; nothing else should run on it)",
    )
    args = parser.parse_args(argv)
    result = examine(args.sample_s, power_test=gpu_burst if args.power_test else None)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return int(result["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
