"""One measured job per GPU: a job leases a GPU through an exclusive lock file before it
measures, so parallel launchers (joblib, submitit_local) never put two measurements on one GPU.
Locks are advisory flocks, released by the kernel when the holder dies, so a killed job never
leaves a GPU locked."""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Lease:
    index: int
    key: str
    handle: int

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"

    def release(self) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        os.close(self.handle)


class NoFreeGpu(RuntimeError):
    pass


def lease(gpus: list[tuple[int, str]], lock_dir: Path, wait_s: float, poll_s: float = 0.5) -> Lease:
    """Lock the first free GPU of `gpus` ((index, uuid) pairs), waiting up to `wait_s`."""
    if not gpus:
        raise NoFreeGpu("no GPU to lease")
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for index, key in gpus:
            handle = os.open(lock_dir / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                continue
            os.ftruncate(handle, 0)
            os.write(handle, f"{os.getpid()}\n".encode())
            return Lease(index, key, handle)
        if time.monotonic() >= deadline:
            names = ", ".join(f"cuda:{i}" for i, _ in gpus)
            raise NoFreeGpu(
                f"no free GPU among {names} within {wait_s:.0f} s: other "
                f"attnbench jobs hold them (locks in {lock_dir})"
            )
        time.sleep(poll_s)


def candidates(device: str) -> list[tuple[int, str]]:
    """(index, uuid) of the GPUs a job asking for `device` may use: one for cuda:N, all for
    cuda. UUIDs key the locks, so jobs with different CUDA_VISIBLE_DEVICES still agree."""
    import torch

    from .energy import gpu_uuid

    count = torch.cuda.device_count()
    indices = range(count) if device == "cuda" else [int(device.partition(":")[2] or 0)]
    return [(i, gpu_uuid(torch.device("cuda", i))) for i in indices]
