"""`attnbench-doctor`: is this machine fit to measure on? Run it before trusting any number.

It checks what decides whether a number is right, prints a table and a verdict, and exits 0 when
nothing it can see would make a measurement untrustworthy, 1 when something would (a `fail`
line says what and why). What it cannot see is listed, not passed over. Every sweep stores its
output beside results.csv (harness.data.store); the report shows it.

GPU, through NVML: driver and NVML versions; per GPU the energy counter and its measured step,
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
import subprocess
import sys
import time
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


def gpu_findings(nvml: Any = None, probe_self: bool = True) -> tuple[list[Finding], list[str]]:
    """Findings for every GPU this process may use (CUDA_VISIBLE_DEVICES, mapped to NVML by
    UUID: another job's GPU on a shared node is not ours to judge), and what could not be
    seen."""
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
            step = counter_step(lib, handle)
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
    return found, []


def examine(sample_s: float = 1.0, nvml: Any = None, probe_self: bool = True) -> dict[str, Any]:
    gpu, unseen = gpu_findings(nvml, probe_self)
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
    args = parser.parse_args(argv)
    result = examine(args.sample_s)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return int(result["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
