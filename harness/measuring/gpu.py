"""The GPU as NVML sees it from the measuring process, looked up before the process touches
CUDA (harness.measuring.measure), for the meters that read it."""

from __future__ import annotations

from typing import Any

import torch

from harness.measuring import nvml as nv
from harness.measuring.meters import nvml_energy
from harness.measuring.meters.base import EnergyMeter, Unavailable


class GpuSide:
    """The GPU as NVML sees it, looked up before this process touches CUDA, so that the
    process list taken then is everything that is not this cell."""

    def __init__(self, device: torch.device, uuid: str | None, nvml: Any, reason: str) -> None:
        self.device, self.uuid, self.nvml, self.reason = device, uuid, nvml, reason
        self.handle = None if nvml is None or uuid is None else nv.handle(nvml, uuid)
        self.processes = nvml_energy.GpuProcesses(nvml, self.handle) if self.handle else None

    @classmethod
    def before_cuda(cls, device: torch.device, uuid: str | None) -> GpuSide:
        try:
            lib = nv.load()
            if uuid is None:
                visible = dict(nv.visible_gpus(lib))
                uuid = visible.get(device.index or 0)
            return cls(device, uuid, lib, "" if uuid else "NVML does not list this GPU")
        except nv.Unavailable as err:
            return cls(device, uuid, None, str(err))

    def make_context(self) -> None:
        """Create this process's CUDA context, and check it is on the GPU NVML was asked about."""
        torch.cuda.set_device(self.device)
        torch.empty(1, device=self.device)
        mine = nv.cuda_uuid(self.device)
        if self.uuid is not None and mine != nv.bare(self.uuid):
            raise RuntimeError(
                f"cuda:{self.device.index} is {mine}, not the leased {self.uuid}: CUDA and NVML "
                "order GPUs differently here; set CUDA_DEVICE_ORDER=PCI_BUS_ID"
            )
        if self.processes is not None:
            self.processes.context_made()

    def energy_meter(self, interval_s: float) -> EnergyMeter:
        if self.processes is None or self.uuid is None:
            return Unavailable(self.reason or "NVML has no handle for this GPU")
        return nvml_energy.gpu_meter(self.nvml, self.handle, self.uuid, self.processes, interval_s)

    def others(self) -> int | None:
        """Compute processes on the GPU before this cell's context existed: the others, never
        the cell itself (None where the driver cannot list them)."""
        if self.processes is None or self.processes.unreadable():
            return None
        return len(self.processes.foreign_at_start())
