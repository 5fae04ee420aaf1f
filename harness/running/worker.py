"""Each cell is measured in a process of its own (its memory, its failures), and this is how.

Measuring processes are forked from a fork server that has imported torch, the zoo and fvcore
once and never touched CUDA (harness/measuring/_server.py), so a cell starts in milliseconds
instead of seconds, and CUDA, which does not survive fork, is first initialised in the cell's
own process. The child sends what it knows as soon as it knows it (params and FLOPs before
measuring, so a cell that dies later keeps them) and a final outcome; how a child that sent
no outcome ended is classified here: `oom` only with evidence (an allocation failure, or the
cgroup's oom_kill count rising), otherwise `error` naming the signal.
"""

from __future__ import annotations

import importlib
import multiprocessing
import signal
import sys
import threading
import time
import traceback
import types
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from harness.measuring.cell import CellError

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["harness.measuring._server"])

# Allocation failures, also cuBLAS's and cuDNN's (CUBLAS_STATUS_ALLOC_FAILED, ...): out of memory.
OOM_TEXT = (
    "out of memory",
    "out_of_memory",
    "can't allocate memory",
    "defaultcpuallocator",
    "alloc_failed",
)
# A kernel's documented size limits (a launch beyond the device's grid dimensions, 32-bit
# indexing): neither OOM nor a crash, and larger sizes hit them too. An illegal memory access is
# not one of them: a real bug or a corrupted context looks the same, so it is an `error`,
# measured again on resume.
LIMIT_TEXT = (
    "invalid configuration argument",
    "canuse32bitindexmath",
    "32-bit index",
    "2^31",
    "int32 overflow",
)


@dataclass
class Outcome:
    status: str  # ok | oom | kernel_limit | error | invalid (bad input found while measuring)
    message: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    traceback: str = ""
    terminated: bool = False


def is_oom(err: BaseException) -> bool:
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(t in text for t in OOM_TEXT)


def classify(err: BaseException) -> str:
    if isinstance(err, CellError):
        return "invalid"
    if is_oom(err):
        return "oom"
    text = str(err).lower()
    return "kernel_limit" if any(t in text for t in LIMIT_TEXT) else "error"


def _child(target: str, args: tuple[Any, ...], conn: Connection) -> None:
    """Runs `target(*args, send)` (a 'module:function' name) and reports how it went."""
    try:
        module, _, name = target.partition(":")
        function = getattr(importlib.import_module(module), name)
        fields = function(*args, lambda part: conn.send(("fields", part)))
        conn.send(("done", "ok", "", "", fields))
    except BaseException as err:  # noqa: BLE001  (every failure becomes data)
        status = classify(err)
        last = traceback.format_exception_only(type(err), err)[-1].strip()
        text = str(err) if status == "invalid" else last  # bad input: the message alone
        conn.send(("done", status, text[:2000], traceback.format_exc(), {}))
    finally:
        conn.close()


def cgroup_oom_kills(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> int | None:
    """The kernel's count of OOM kills in this process's memory cgroup (v2 or v1), if readable."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            candidate = root / path.lstrip("/") / "memory.events"
        elif "memory" in controllers.split(","):
            candidate = root / "memory" / path.lstrip("/") / "memory.oom_control"
        else:
            continue
        try:
            for entry in candidate.read_text().splitlines():
                key, _, value = entry.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def died(exitcode: int | None, kills_before: int | None, kills_after: int | None) -> Outcome:
    """The outcome of a child that exited without reporting one."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        rose = kills_before is not None and kills_after is not None and kills_after > kills_before
        if -exitcode == signal.SIGKILL and rose:
            return Outcome(
                "oom",
                f"killed by SIGKILL; the cgroup's oom_kill count rose "
                f"{kills_before} -> {kills_after} (the kernel OOM killer)",
            )
        evidence = (
            "no OOM record: the cgroup's oom_kill count did not rise"
            if kills_before is not None
            else "no OOM evidence readable (no memory cgroup counter)"
        )
        return Outcome("error", f"measuring process killed by {name} ({evidence})")
    return Outcome("error", f"measuring process exited with code {exitcode} and no report")


STOPPING: dict[int, str] = {
    signal.SIGTERM: "SIGTERM (scancel, preemption or a time limit)",
    signal.SIGUSR2: "SIGUSR2 (the launcher's time-limit warning, signal_delay_s before the limit)",
}


class Terminated(SystemExit):
    """The job was told to stop (SIGTERM: scancel, preemption, a time limit, kill): exit 143
    (a SystemExit, so Hydra's launchers do not carry on to the next cell)."""

    def __init__(self, message: str) -> None:
        super().__init__(143)
        self.message = message


def run(target: str, args: tuple[Any, ...], timeout_s: float, why: str = "timeout_s") -> Outcome:
    """Run `target(*args, send)` in a fresh process; never raises for what happens there.

    `timeout_s` counts from this call, so the measuring process's own start (the fork server's
    first start imports torch: seconds, more on a cold machine) is inside it; with no time left
    (zero or less) the process is not started and the outcome says so.

    A SIGTERM to this process while it waits (scancel, preemption: SLURM signals the whole job),
    or the time-limit warning submitit asked for (SIGUSR2, `signal_delay_s` before the limit;
    submitit ends a job it cannot requeue on it), stops the measuring process and becomes the
    outcome; the caller writes the row and then raises Terminated, so a stopped sweep stops
    instead of going on to the next cell."""
    stopped: list[int] = []

    def stop(signum: int, frame: object) -> None:
        stopped.append(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, stop) for sig in STOPPING}
    try:
        outcome = _run(target, args, timeout_s, why, stopped)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped:
        outcome.status = "error"
        outcome.message = f"stopped: the job got {STOPPING[stopped[0]]} while measuring"
        outcome.terminated = True
    return outcome


def _run(
    target: str, args: tuple[Any, ...], timeout_s: float, why: str, stopped: list[int]
) -> Outcome:
    deadline = time.monotonic() + timeout_s
    if timeout_s <= 0:
        return Outcome("error", f"not started: no time left to measure ({why})")
    receive, send = _CONTEXT.Pipe(duplex=False)
    kills_before = cgroup_oom_kills()
    process = _CONTEXT.Process(target=_child, args=(target, args, send), daemon=True)
    # multiprocessing re-runs the launching script (`__main__`) in each child; a cell needs
    # nothing from it, and re-running it costs time and memory (and breaks unguarded scripts).
    launcher, sys.modules["__main__"] = sys.modules["__main__"], types.ModuleType("__main__")
    try:
        process.start()
    finally:
        sys.modules["__main__"] = launcher
    send.close()
    fields: dict[str, Any] = {}
    outcome: Outcome | None = None
    while outcome is None:
        if stopped:
            process.kill()
            outcome = Outcome("error", "stopped")
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            process.kill()
            outcome = Outcome("error", f"timed out after {round(timeout_s, 1):g} s ({why})")
            break
        if not receive.poll(min(remaining, 0.2)):
            continue  # look again: a SIGTERM may have come meanwhile
        try:
            message = receive.recv()
        except EOFError:  # the child died without a word
            process.join()
            outcome = died(process.exitcode, kills_before, cgroup_oom_kills())
            break
        if message[0] == "fields":
            fields.update(message[1])
        else:
            _, status, text, trace, final = message
            outcome = Outcome(status, text, final, trace)
    process.join()
    receive.close()
    outcome.fields = fields | outcome.fields
    return outcome
