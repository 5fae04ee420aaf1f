"""A fake of the pynvml calls the harness makes, scripted per test."""

from __future__ import annotations

NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeNvml:
    """Energy counter values are served in order (the last repeats); power is constant."""

    NVMLError = NVMLError
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_CLOCK_SM, NVML_CLOCK_MEM = NVML_CLOCK_SM, NVML_CLOCK_MEM
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU

    def __init__(
        self, counters_mj=(), power_mw=200_000, uuids=("GPU-fake",), mig=0, counter_supported=True
    ) -> None:
        self.counters = list(counters_mj)
        self.power_mw = power_mw
        self.uuids = set(uuids)
        self.mig = mig
        self.counter_supported = counter_supported
        self.counter_reads = 0

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        if uuid not in self.uuids:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return uuid

    def nvmlDeviceGetMigMode(self, handle):
        return self.mig, self.mig

    def nvmlDeviceGetTotalEnergyConsumption(self, handle) -> int:
        if not self.counter_supported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        value = self.counters[min(self.counter_reads, len(self.counters) - 1)]
        self.counter_reads += 1
        return value

    def nvmlDeviceGetPowerUsage(self, handle) -> int:
        return self.power_mw

    running_pids: tuple[int, ...] = ()

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        from types import SimpleNamespace

        return [SimpleNamespace(pid=pid, usedGpuMemory=0) for pid in self.running_pids]
