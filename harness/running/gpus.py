"""One measured job per GPU: a job leases a GPU through an exclusive lock file before it
measures, so parallel launchers (joblib, submitit_local) never put two measurements on one GPU.

Locks are advisory flocks, released by the kernel when the holder dies, so a killed job never
leaves a GPU locked. The lock directory is shared by every user of the machine: it is made
world-writable with the sticky bit (like /tmp), lock files are opened read-only (flock needs no
write access), so a file another user created locks just as well.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.measuring import nvml as nv


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


def lock_dir(path: Path) -> Path:
    """The shared lock directory, made usable by every user when this job creates it."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):  # another user's: theirs is as good
            os.chmod(path, 0o1777)
    return path


def _open_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    with contextlib.suppress(PermissionError):  # not ours: read access is all a lock needs
        os.fchmod(fd, 0o666)  # the umask narrowed it; other users must be able to open it
    return fd


def lease(
    gpus: list[tuple[int, str]],
    where: Path,
    wait_s: float,
    poll_s: float = 0.5,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    every_s: float = 60.0,
) -> Lease:
    """Lock the first free GPU of `gpus` ((index, uuid) pairs), waiting up to `wait_s` and
    saying what it waits for every `every_s`.

    OSError (an unwritable lock directory, say) propagates: the job records it as an error row.
    """
    if not gpus:
        raise NoFreeGpu("no GPU to lease")
    directory = lock_dir(where)
    start = time.monotonic()
    deadline, next_word = start + wait_s, start + every_s
    names = ", ".join(f"cuda:{i}" for i, _ in gpus)
    while True:
        for index, key in gpus:
            handle = _open_lock(directory / f"{key}.lock")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                continue
            return Lease(index, key, handle)
        now = time.monotonic()
        if now >= next_word:
            say(
                f"attnbench: waiting {now - start:.0f} s (of up to {wait_s:.0f} s) for a free GPU "
                f"among {names}: other attnbench jobs hold them (locks in {directory})"
            )
            next_word = now + every_s
        if now >= deadline:
            raise NoFreeGpu(
                f"no free GPU among {names} within {wait_s:.0f} s: other "
                f"attnbench jobs hold them (locks in {directory})"
            )
        time.sleep(poll_s)


def candidates(device: str, nvml: object = None) -> list[tuple[int, str]]:
    """(CUDA index, UUID) of the GPUs a job asking for `device` may use: one for cuda:N, all
    for cuda. Asked of NVML, so the launching process never initialises CUDA; UUIDs key the
    locks, so jobs with different CUDA_VISIBLE_DEVICES still agree."""
    try:
        visible = nv.visible_gpus(nv.load(nvml))
    except nv.Unavailable as err:
        raise NoFreeGpu(f"cannot list GPUs to lease: {err}") from None
    if device == "cuda":
        return visible
    wanted = int(device.partition(":")[2] or 0)
    return [(i, uuid) for i, uuid in visible if i == wanted]
