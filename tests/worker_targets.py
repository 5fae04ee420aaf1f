"""Functions the worker tests run in a measuring process (importable there by name)."""

import os
import signal


def kill_self(send):
    send({"params": 7})
    os.kill(os.getpid(), signal.SIGKILL)


def boom(send):
    send({"params": 7})
    return 1 / 0


def fine(send):
    send({"params": 7})
    return {"latency_ms": 1.0}


def warn_job_then_wait(job, send):
    """Sends the launcher's time-limit warning to the waiting job, then measures on."""
    import time

    send({"params": 7})
    os.kill(job, signal.SIGUSR2)
    time.sleep(600)
