"""NVML in one place: start-up, a GPU's handle by UUID, the GPUs this job may use, and every
NVML failure turned into a reason instead of an exception.

NVML is driver-side and knows nothing of CUDA_VISIBLE_DEVICES, so GPUs are matched by UUID,
never by index. Anything here may be given a stand-in module (`nvml=`) by tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Unavailable(Exception):
    """NVML cannot answer; the message says why (no library, no driver, no such device)."""


def load(nvml: Any = None) -> Any:
    """pynvml (or the given stand-in), initialised; Unavailable with the reason otherwise."""
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            raise Unavailable("pynvml (nvidia-ml-py) is not installed") from None
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception as err:  # NVMLError_LibraryNotFound, DriverNotLoaded, OSError, ...
        raise Unavailable(f"NVML could not start: {err}") from None
    return nvml


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def handle(nvml: Any, uuid: str) -> Any:
    """The NVML handle of a GPU or MIG instance by its UUID ('GPU-...' or 'MIG-...')."""
    try:
        return nvml.nvmlDeviceGetHandleByUUID(uuid)
    except Exception as err:
        raise Unavailable(f"NVML has no device with UUID {uuid}: {err}") from None


def read(fn: Callable[[], T]) -> T | str:
    """An optional NVML reading: its value, or 'unavailable: <why>' for any failure.

    Older drivers raise NVMLLibraryMismatchError (a plain Exception, not an NVMLError) for calls
    newer than themselves, so every exception degrades the reading, never the cell.
    """
    try:
        return fn()
    except Exception as err:
        return f"unavailable: {type(err).__name__}: {err}"


def clock_reasons(nvml: Any, handle: Any) -> Any:
    """The GPU's clock event reasons now (a bit mask), or why they cannot be read; drivers before
    535 name the call "throttle reasons"."""
    reasons = read(lambda: nvml.nvmlDeviceGetCurrentClocksEventReasons(handle))
    if failed(reasons):
        reasons = read(lambda: nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))
    return reasons


def failed(reading: object) -> bool:
    """Whether a `read` result is the reason it failed rather than a value."""
    return isinstance(reading, str) and reading.startswith("unavailable: ")


def all_uuids(nvml: Any) -> list[str]:
    """UUIDs of every GPU the driver has, in NVML (PCI bus) order."""
    count = nvml.nvmlDeviceGetCount()
    return [text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)]


def bare(uuid: str) -> str:
    """A UUID without NVML's 'GPU-' / 'MIG-' prefix."""
    return uuid.split("-", 1)[1] if uuid[:4] in ("GPU-", "MIG-") else uuid


def cuda_uuid(device: Any) -> str:
    """The UUID CUDA gives a torch device, bare (CUDA does not say whether it is a MIG slice)."""
    import torch

    return bare(str(torch.cuda.get_device_properties(device).uuid))


def visible_gpus(nvml: Any, environ: dict[str, str] | None = None) -> list[tuple[int, str]]:
    """(CUDA index, UUID) of the GPUs this process may use, from CUDA_VISIBLE_DEVICES.

    Entries are indices into NVML's PCI-bus order, UUID prefixes, or MIG slices' UUIDs ('MIG-...',
    kept as they are: their key and their energy refusal say MIG), as CUDA accepts them; the
    list stops at the first entry that matches nothing, as CUDA's does. The measuring process
    checks that its CUDA device has the leased UUID, so an order that differs (CUDA's default
    is fastest-first unless CUDA_DEVICE_ORDER=PCI_BUS_ID) fails loudly instead of measuring
    the wrong GPU.
    """
    env = os.environ if environ is None else environ
    uuids = all_uuids(nvml)
    spec = env.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return list(enumerate(uuids))
    chosen: list[str] = []
    for entry in (e.strip() for e in spec.split(",")):
        if entry.startswith("MIG-"):  # a MIG slice is named by its own UUID
            chosen.append(entry)
            continue
        if entry.isdigit():
            match = uuids[int(entry)] if int(entry) < len(uuids) else None
        else:
            found = [u for u in uuids if entry and u.startswith(entry)]
            match = found[0] if len(found) == 1 else None
        if match is None or match in chosen:
            break
        chosen.append(match)
    return list(enumerate(chosen))
