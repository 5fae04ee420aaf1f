"""A process that leases one of two fake GPUs for a while and logs when (spawned by the tests:
this module imports only what a lease needs, so the processes start fast)."""

import time
from pathlib import Path

from harness.running import gpus

GPUS = [(0, "GPU-aaaa"), (1, "GPU-bbbb")]


def hold(lock_dir: str, log: str, seconds: float) -> None:
    held = gpus.lease(GPUS, Path(lock_dir), wait_s=60, poll_s=0.02)
    start = time.monotonic()
    time.sleep(seconds)
    with open(log, "a") as handle:
        handle.write(f"{held.key} {start} {time.monotonic()}\n")
    held.release()
