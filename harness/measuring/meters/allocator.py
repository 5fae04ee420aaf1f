"""CPU memory meter: what the cell allocates, from torch's own CPU allocator, and the glibc
policy the allocations were served under.

The process's resident high-water mark is not what a cell allocates: glibc's malloc serves a
large buffer from a fresh mmap or from its heap depending on what was freed before (its mmap
threshold moves) and returns the heap's top to the kernel or keeps it, so the same model's
peak RSS came out 33 or 46 MB from one process to the next (softmax 448², here), and its step
time 30 or 39 ms (page faults on every step in one of the two states). So:

- `steady_malloc()` fixes glibc's thresholds before the cell builds anything (buffers up to
  32 MiB from the heap, the heap never trimmed): the step measures the attention, not the page
  faults (softmax 448² then ran at 22-23 ms in every process). `malloc=system` keeps glibc's
  defaults; either is recorded in `allocator_conf`.
- one extra step after the timed window runs under torch's profiler with memory profiling on,
  which sees every allocation and free of torch's CPU allocator from its start, with a running
  total: the peak of that total is `peak_mem_bytes` on the CPU, what the step itself allocates
  at its fullest (activations, workspace, new gradients), not the weights, input and optimizer
  state it found allocated. It is the same number in every process for the same code. The
  resident high-water mark stays beside it (`peak_rss_bytes`, harness.measuring.meters.memory).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from typing import Any

import torch

from harness.measuring.meters.base import Bench, Plug, Window

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt(3) parameters
STEADY = {"M_MMAP_THRESHOLD": 32 * 2**20, "M_TRIM_THRESHOLD": 2**30}
_policy = ["glibc defaults"]  # what steady_malloc() left in force in this process


def steady_malloc(how: str) -> None:
    """Before anything is built: glibc's thresholds fixed (`steady`), or its defaults kept."""
    if how == "system":
        _policy[0] = "glibc defaults"
        return
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, TypeError, AttributeError):
        _policy[0] = f"unavailable: no glibc mallopt ({name or 'no C library found'})"
        return
    done = [
        mallopt(_M_MMAP_THRESHOLD, STEADY["M_MMAP_THRESHOLD"]),
        mallopt(_M_TRIM_THRESHOLD, STEADY["M_TRIM_THRESHOLD"]),
    ]
    if all(done):
        _policy[0] = "glibc " + ",".join(f"{k}={v}" for k, v in STEADY.items())
    else:
        _policy[0] = "unavailable: mallopt refused the thresholds (glibc defaults in force)"


def warm_up() -> None:
    """Start the profiler once (its first start costs ~0.8 s), in the fork server on a CPU-only
    build, so that each measuring process forked from it starts it in milliseconds."""
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        with (
            _quiet(),
            torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
            ),
        ):
            torch.ones(1)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Kineto writes two lines to stderr at each start and stop of the profiler."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _events(nodes: Any) -> Iterator[Any]:
    for node in nodes:
        yield node
        yield from _events(node.children)


class AllocatorMeter:
    """Spans one extra step after the window ("step")."""

    def __init__(self) -> None:
        self.profile: Any = None
        self.quiet: Any = None
        self.peak: int | None = None
        self.source = ""

    def begin(self) -> None:
        self.profile = torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
        )
        self.quiet = _quiet()  # also the allocator's warnings about blocks from before the step
        self.quiet.__enter__()
        self.profile.__enter__()

    def end(self) -> None:
        try:
            self.profile.__exit__(None, None, None)
        finally:
            self.quiet.__exit__(None, None, None)
        try:
            from torch._C._profiler import _EventType

            tree = self.profile.profiler.kineto_results.experimental_event_tree()
            totals = [
                e.extra_fields.total_allocated
                for e in _events(tree)
                if e.tag == _EventType.Allocation and e.extra_fields.device.type == "cpu"
            ]
        except (AttributeError, ImportError, RuntimeError) as err:
            self.source = f"unavailable: torch's profiler gave no allocations ({err})"
            return
        if not totals:
            self.source = "unavailable: the step made no allocation the profiler saw"
            return
        self.peak = int(max(totals))
        self.source = "cpu:step_allocations_peak (torch profiler, one step after the window)"

    def fields(self, window: Window) -> dict[str, Any]:
        return {
            "peak_mem_bytes": self.peak,
            "mem_source": self.source,
            "allocator_conf": _policy[0],
        }


def _make(bench: Bench) -> AllocatorMeter:
    return AllocatorMeter()


PLUG = Plug(
    "allocator", ("peak_mem_bytes", "mem_source", "allocator_conf"), ("cpu",), "step", _make
)
