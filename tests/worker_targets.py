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
