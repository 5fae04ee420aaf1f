"""Timing meter: warm up, then time a window of back-to-back iterations without host syncs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.config import TimingConfig


@dataclass(frozen=True)
class Timing:
    per_iter_s: list[float]
    window_s: float

    @property
    def iters(self) -> int:
        return len(self.per_iter_s)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.per_iter_s)
        if len(ordered) == 1:
            return ordered[0]
        return statistics.quantiles(ordered, n=100, method="inclusive")[round(q * 100) - 1]

    @property
    def median_s(self) -> float:
        return statistics.median(self.per_iter_s)


MAX_SETTLE_STEPS = 200  # warm-up steps allowed for a step to settle (GradScaler's scale)
ESTIMATE_STEPS = 3  # timed steps after the warm-up that size a GPU window


class Timer:
    """Times `step` on `device`: CUDA events on a GPU, perf_counter on the CPU.

    `warm_up` runs the step until both the iteration and time minimums are met and estimates the
    cost of one step (from the last warm-up step where steps are so slow that the window is
    `min_iters` steps anyway: a 2 s step then costs 2 warm-up and 3 timed steps, not 6);
    `measure` then runs enough steps to fill the window. On a GPU one event is recorded between
    steps and the host synchronises once at the end, so the timed loop holds no sync, logging or
    allocation beyond the pre-made events.
    """

    def __init__(
        self, step: Callable[[], object], device: torch.device, config: TimingConfig
    ) -> None:
        self.step, self.device, self.config = step, device, config
        self.estimate_s: float | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def warm_up(self) -> float:
        """Run warm-up steps; returns the seconds they took (compile time, when compiling)."""
        cfg = self.config
        self._sync()
        start = time.perf_counter()
        done = 0
        ready = getattr(self.step, "ready", lambda: True)
        step_s = 0.0
        while (
            done < max(cfg.warmup_iters, 1)
            or time.perf_counter() - start < cfg.warmup_s
            or (not ready() and done < MAX_SETTLE_STEPS)
        ):
            begin = time.perf_counter()
            self.step()
            self._sync()
            step_s = time.perf_counter() - begin
            done += 1
        last = time.perf_counter()
        if done > 1 and cfg.min_iters > 1 and step_s >= cfg.window_s / (cfg.min_iters - 1):
            # so slow that the window is min_iters steps whatever an estimate says: the last
            # warm-up step (warm by now) is the estimate, and no more steps are spent on one
            self.estimate_s = step_s
            return last - start
        estimates = []
        for _ in range(ESTIMATE_STEPS):  # a median, so one slow step cannot size the window
            begin = time.perf_counter()
            self.step()
            self._sync()
            estimates.append(time.perf_counter() - begin)
            if time.perf_counter() - last > cfg.window_s:
                break
        self.estimate_s = statistics.median(estimates)
        return last - start

    def planned_iters(self) -> int:
        cfg = self.config
        if self.estimate_s is None:
            raise RuntimeError("call warm_up() before measure()")
        wanted = int(cfg.window_s / max(self.estimate_s, 1e-9)) + 1
        return max(cfg.min_iters, min(cfg.max_iters, wanted))

    def measure(
        self, on_begin: Callable[[], None] = lambda: None, on_end: Callable[[], None] = lambda: None
    ) -> Timing:
        """Time the window; `on_begin` / `on_end` bracket it exactly (energy meters hook in).

        On the CPU the window runs until `window_s` has passed (within min_iters..max_iters):
        the clock can be read without a sync. On a GPU the launch runs ahead of the device, so
        the number of steps is planned from the warm-up's estimate."""
        if self.device.type == "cuda":
            return self._measure_cuda(self.planned_iters(), on_begin, on_end)
        cfg = self.config
        stamps = [0.0] * (cfg.max_iters + 1)
        on_begin()
        stamps[0] = time.perf_counter()
        deadline = stamps[0] + cfg.window_s
        done = 0
        while done < cfg.max_iters and (done < cfg.min_iters or stamps[done] < deadline):
            self.step()
            done += 1
            stamps[done] = time.perf_counter()
        on_end()
        deltas = [b - a for a, b in zip(stamps[:done], stamps[1 : done + 1], strict=True)]
        return Timing(deltas, stamps[done] - stamps[0])

    def _measure_cuda(self, iters: int, on_begin, on_end) -> Timing:
        events = [torch.cuda.Event(enable_timing=True) for _ in range(iters + 1)]
        self._sync()
        on_begin()
        wall = time.perf_counter()
        events[0].record()
        for i in range(iters):
            self.step()
            events[i + 1].record()
        self._sync()
        wall = time.perf_counter() - wall
        on_end()
        deltas = [a.elapsed_time(b) / 1e3 for a, b in zip(events, events[1:], strict=False)]
        return Timing(deltas, wall)
