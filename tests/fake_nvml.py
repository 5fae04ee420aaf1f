"""A stand-in for pynvml that behaves like NVML on a Hopper GPU, for tests on a CPU machine.

Realistic by default, in the ways that decide a number:
- the total-energy counter (mJ) advances only every `period_s` (~100 ms on real GPUs), by the
  energy of the power profile over that period, not on every read; with `sensor_duty` below 1
  the sensor sees only the last `sensor_duty` of each period and counts its mean power for the
  whole period (A100/H100 sample ~25% of the runtime: "Part-time Power Measurements", arXiv
  2312.02741), so a load shorter than the period is over- or under-counted by where it falls;
- `nvmlDeviceGetPowerUsage` is a 1-second moving average (Ampere except GA100, and newer), while
  the instant power is a field value (`NVML_FI_DEV_POWER_INSTANT` via `nvmlDeviceGetFieldValues`);
- in a container the process list shows host PIDs: the measuring process appears under a PID
  it does not know (`host_pid_offset`), and other processes may be listed (`others`);
- an old driver (`old_driver=True`) raises NVMLLibraryMismatchError, a plain Exception and not
  an NVMLError, for the newest calls (process list v3, clocks event reasons, field values).
- when the load stops, the GPU changes P-state `pstate_delay_s` later: for `settle_s` its clock
  event reasons say
  hardware slowdown (0x8, as DCGM warns they may during a P-state or clock change) beside
  GpuIdle (0x1), then GpuIdle alone, and the SM clock falls to `idle_sm_mhz`: a reader that
  looks after the load has gone sees an idle GPU, not the window;
- the violation counters (`nvmlDeviceGetViolationStatus`, cumulative ns per policy) advance
  while a limit holds the clocks down (`set_limited(policy, True)`).
`power_w(t)` is the board's power at t seconds after the fake was made (`idle_w`, or `load_w`
after `set_busy(True)`). A simple mode (`counters_mj=[...]`, or `simple=True`) serves scripted
counter values in order and a constant `power_mw`, for tests that need exact numbers.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0
NVML_FI_DEV_POWER_INSTANT = 186
NVML_SUCCESS = 0


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class NVMLLibraryMismatchError(Exception):
    """What pynvml raises when the driver's library lacks a function (not an NVMLError)."""


class FakeNvml:
    NVMLError = NVMLError
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_CLOCK_SM, NVML_CLOCK_MEM = NVML_CLOCK_SM, NVML_CLOCK_MEM
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVML_FI_DEV_POWER_INSTANT = NVML_FI_DEV_POWER_INSTANT

    def __init__(
        self,
        counters_mj=(),
        power_mw=200_000,
        uuids=("GPU-fake",),
        mig=0,
        counter_supported=True,
        period_s=0.1,
        idle_w=60.0,
        load_w=300.0,
        host_pid_offset=0,
        others=(),
        old_driver=False,
        instant_field=True,
        simple=None,
        settle_s=0.15,
        pstate_delay_s=0.03,
        busy_util=100,
        idle_sm_mhz=345,
        load_sm_mhz=1980,
        sensor_duty=1.0,
    ) -> None:
        self.counters = list(counters_mj)
        self.simple = bool(counters_mj) if simple is None else simple
        self.power_mw = power_mw
        self.uuids = list(uuids)
        self.mig = mig
        self.counter_supported = counter_supported
        self.period_s, self.idle_w, self.load_w = period_s, idle_w, load_w
        self.host_pid_offset = host_pid_offset
        self.others = dict(others) if isinstance(others, dict) else list(others)  # by UUID, or all
        self.old_driver = old_driver
        self.instant_field = instant_field
        self.start = time.monotonic()
        self.busy = False
        self.busy_since: list[tuple[float, bool]] = [(0.0, False)]
        self.counter_reads = 0
        self.contexts: list[int] = []  # PIDs (as this process sees them) with a CUDA context
        self.scripted: dict[str, list] = {}
        self.settle_s, self.idle_sm_mhz, self.load_sm_mhz = settle_s, idle_sm_mhz, load_sm_mhz
        self.pstate_delay_s = pstate_delay_s
        self.busy_util = busy_util  # % of a sample period with a kernel running, while loaded
        self.limited: dict[int, list[tuple[float, bool]]] = {}
        self.sensor_duty = sensor_duty
        self.counted: list[float] = []  # J counted for each period that has ended

    # ---- the simulated board

    def now(self) -> float:
        return time.monotonic() - self.start

    def set_busy(self, busy: bool) -> None:
        self.busy_since.append((self.now(), busy))

    def set_limited(self, policy: int, limited: bool) -> None:
        """A limit (NVML_PERF_POLICY_*: 0 power, 1 thermal) starts or stops holding clocks."""
        self.limited.setdefault(policy, [(0.0, False)]).append((self.now(), limited))

    def phase(self, t: float) -> str:
        """busy, settling (the P-state change after the load stopped) or idle."""
        state, changed = False, 0.0
        for since, busy in self.busy_since:
            if since <= t and busy != state:
                state, changed = busy, since
        ran = any(busy for since, busy in self.busy_since if since <= t)
        if state or (ran and t - changed < self.pstate_delay_s):
            return "busy"
        return "settling" if ran and t - changed < self.pstate_delay_s + self.settle_s else "idle"

    def power_w(self, t: float) -> float:
        state = False
        for since, busy in self.busy_since:
            if since <= t:
                state = busy
        return self.load_w if state else self.idle_w

    def energy_j(self, t0: float, t1: float) -> float:
        """The board's energy from t0 to t1, exactly: power is idle or load between changes."""
        total, at = 0.0, t0
        for since, _ in self.busy_since:
            if t0 < since < t1:
                total += (since - at) * self.power_w(at)
                at = since
        return total + (t1 - at) * self.power_w(at)

    def counted_j(self, periods: int) -> float:
        """What the counter has added over the first `periods` periods: each period's
        energy as its sensor saw it (the mean power of its sampled part, for the period)."""
        while len(self.counted) < periods:
            end = (len(self.counted) + 1) * self.period_s
            seen = self.period_s * self.sensor_duty
            self.counted.append(self.energy_j(end - seen, end) * self.period_s / seen)
        return sum(self.counted[:periods])

    def script(self, **sequences) -> None:
        """Serve these readings in order (the last repeats): clocks_event_reasons,
        sm_clock_mhz, temperature_c."""
        self.scripted.update({k: list(v) for k, v in sequences.items()})

    def _next(self, name: str, default):
        values = self.scripted.get(name)
        if not values:
            return default
        return values.pop(0) if len(values) > 1 else values[0]

    # ---- pynvml's API

    def nvmlInit(self) -> None:
        pass

    def nvmlSystemGetDriverVersion(self) -> str:
        return "470.00" if self.old_driver else "550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.uuids)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return self.uuids[index]

    def nvmlDeviceGetUUID(self, handle) -> str:
        return handle

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        if uuid not in self.uuids:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return uuid

    def nvmlDeviceGetMigMode(self, handle):
        return self.mig, self.mig

    def nvmlDeviceGetTotalEnergyConsumption(self, handle) -> int:
        if not self.counter_supported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if self.simple:  # scripted values in order
            value = self.counters[min(self.counter_reads, len(self.counters) - 1)]
            self.counter_reads += 1
            return value
        periods = int(self.now() / self.period_s)  # updated at the end of each
        return int(1e3 * self.counted_j(periods)) + 10**9

    def nvmlDeviceGetPowerUsage(self, handle) -> int:
        if self.simple:
            return self.power_mw
        t = self.now()
        return int(1e3 * self.energy_j(max(0.0, t - 1.0), t) / min(1.0, max(t, 1e-3)))

    def nvmlDeviceGetFieldValues(self, handle, field_ids):
        if self.old_driver:
            raise NVMLLibraryMismatchError("Unversioned function called and the driver is too old")
        out = []
        for field in field_ids:
            ok = field == NVML_FI_DEV_POWER_INSTANT and self.instant_field
            value = SimpleNamespace(uiVal=int(1e3 * self.power_w(self.now())))
            out.append(
                SimpleNamespace(
                    fieldId=field,
                    nvmlReturn=NVML_SUCCESS if ok else NVML_ERROR_NOT_SUPPORTED,
                    valueType=1,
                    value=value,
                )
            )
        return out

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        if self.old_driver:
            raise NVMLLibraryMismatchError("nvmlDeviceGetComputeRunningProcesses_v3 not found")
        others = self.others.get(handle, []) if isinstance(self.others, dict) else self.others
        pids = [pid + self.host_pid_offset for pid in self.contexts] + list(others)
        return [SimpleNamespace(pid=pid, usedGpuMemory=0) for pid in pids]

    def _reasons(self) -> int:
        phase = self.phase(self.now())
        return self._next("clocks_event_reasons", {"busy": 0, "settling": 0x9, "idle": 0x1}[phase])

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle) -> int:
        if self.old_driver:
            raise NVMLLibraryMismatchError("nvmlDeviceGetCurrentClocksEventReasons not found")
        return self._reasons()

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle) -> int:
        return self._reasons()  # the older name: every driver has it

    def nvmlDeviceGetClockInfo(self, handle, clock) -> int:
        if clock != NVML_CLOCK_SM:
            return 2619
        idle = self.phase(self.now()) == "idle" and any(b for _, b in self.busy_since)
        return self._next("sm_clock_mhz", self.idle_sm_mhz if idle else self.load_sm_mhz)

    def nvmlDeviceGetUtilizationRates(self, handle):
        busy = self.phase(self.now()) == "busy"
        return SimpleNamespace(gpu=self.busy_util if busy else 0, memory=0)

    def nvmlDeviceGetViolationStatus(self, handle, policy):
        now, held, since = self.now(), 0.0, None
        for at, on in self.limited.get(policy, []):
            if on and since is None:
                since = at
            elif not on and since is not None:
                held, since = held + at - since, None
        if since is not None:
            held += now - since
        return SimpleNamespace(referenceTime=int(now * 1e6), violationTime=int(held * 1e9))

    def nvmlDeviceGetTemperature(self, handle, sensor) -> int:
        return self._next("temperature_c", 45)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle) -> int:
        return 700_000

    def nvmlDeviceGetPowerManagementLimit(self, handle) -> int:
        return self._next("power_limit_mw", 700_000)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle) -> int:
        return 700_000

    def nvmlSystemGetNVMLVersion(self) -> str:
        return "12.550.54.15"

    def nvmlDeviceGetName(self, handle) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetPersistenceMode(self, handle) -> int:
        return 1

    def nvmlDeviceGetMaxClockInfo(self, handle, clock) -> int:
        return 1980

    def nvmlDeviceGetApplicationsClock(self, handle, clock) -> int:
        return 1980

    def nvmlDeviceGetDefaultApplicationsClock(self, handle, clock) -> int:
        return 1980

    # ---- what the measuring process does to the GPU

    def open_context(self, pid: int | None = None) -> None:
        """A process creates its CUDA context: it appears in the process list (host PID)."""
        self.contexts.append(os.getpid() if pid is None else pid)
