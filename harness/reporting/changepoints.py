"""Change points in a series of runs, the way Apache Otava (formerly Hunter, DataStax) finds
them: E-divisive means proposes where a series splits best, and a Student's t-test between the
two sides decides whether the split is real; splitting recurses into both sides, and a final
pass drops the weakest change point until every one left is significant against its
neighbours' segments.

Why written here, on numpy and scipy: `apache-otava` 0.8.0 pins numpy 2.2 (below what this
project installs) and pulls BigQuery, Postgres and Slack clients; MongoDB's
`signal-processing-algorithms` needs numpy < 2; `ruptures` has binary segmentation and kernel
change points but no significance test, which is the part that keeps the noise of a shared
machine from becoming change points. The method is small: the energy statistic of a split
(Matteson & James, 2014, with alpha = 1) from prefix sums of a segment's distance matrix, the
t-test from scipy. Long series are searched in overlapping windows (as Otava does), so the
cost grows with the series' length, not its square.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats

MAX_P = 0.001  # a split is real when the t-test's p-value of no change is at most this
MIN_SIZE = 3  # points on each side of a split, at least
WINDOW = 120  # the longest stretch the energy statistic is computed over at once


@dataclass(frozen=True)
class Change:
    """A change point: the first run after it (its index in the series), the ratio of the
    geometric means after / before, its 95% interval and the t-test's p-value."""

    index: int
    ratio: float
    lo: float
    hi: float
    p: float


def _energy(x: np.ndarray) -> tuple[int, float]:
    """The split of `x` that maximises E-divisive's statistic (the index of the first point of
    the right side; -1 when x is too short) and that statistic, for every split at once from
    prefix sums of the distance matrix."""
    n = len(x)
    if n < 2 * MIN_SIZE:
        return -1, -np.inf
    d = np.abs(x[:, None] - x[None, :])
    rows = np.cumsum(d, axis=1)  # rows[a, b]: the sum of d[a, :b + 1]
    tau = np.arange(1, n + 1)
    # ordered pairs within x[:tau], and across (x[:tau], x[tau:])
    within = np.cumsum(2 * rows[np.arange(n), np.arange(n)])
    across = np.cumsum(rows[:, n - 1]) - within  # each row's whole sum, less its part inside
    right = within[-1] - within - 2 * across
    m, k = tau.astype(float), (n - tau).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = (m * k / n) * (2 * across / (m * k) - within / m**2 - right / k**2)
    allowed = (tau >= MIN_SIZE) & (tau <= n - MIN_SIZE)
    stat = np.where(allowed, stat, -np.inf)
    best = int(np.argmax(stat))
    return int(tau[best]), float(stat[best])


def _test(before: np.ndarray, after: np.ndarray) -> float:
    """Student's t-test of the two sides' means (Welch's form: their spreads may differ)."""
    if np.ptp(np.concatenate([before, after])) == 0:
        return 1.0
    found = scipy.stats.ttest_ind(before, after, equal_var=False)
    p = float(found.pvalue)
    return p if np.isfinite(p) else 0.0 if before.mean() != after.mean() else 1.0


def _candidate(x: np.ndarray, lo: int, hi: int) -> int | None:
    """The best split of x[lo:hi] (absolute index), searching windows of at most WINDOW."""
    if hi - lo < 2 * MIN_SIZE:
        return None
    if hi - lo <= WINDOW:
        tau, _ = _energy(x[lo:hi])
        return lo + tau if tau > 0 else None
    best, where = -np.inf, None
    step = WINDOW // 2
    for start in range(lo, hi - MIN_SIZE * 2, step):
        end = min(start + WINDOW, hi)
        if end - start < 2 * MIN_SIZE:
            break
        tau, stat = _energy(x[start:end])
        # compare windows by the t-test of the split they propose over the whole stretch
        if tau > 0:
            p = _test(x[lo : start + tau], x[start + tau : hi])
            score = -p if p > 0 else stat
            if score > best or where is None:
                best, where = score, start + tau
        if end == hi:
            break
    return where


def _bounds(points: list[int], n: int) -> list[tuple[int, int, int]]:
    edges = [0, *points, n]
    return [(edges[i - 1], edges[i], edges[i + 1]) for i in range(1, len(edges) - 1)]


def _relocate(x: np.ndarray, points: list[int]) -> list[int]:
    """Each change point placed again where the energy statistic puts it between its
    neighbours (within WINDOW of where it was found): a point found from a window that held the
    step near its edge moves to where the whole stretch between its neighbours says."""
    moved = list(points)
    for i, (a, b, c) in enumerate(_bounds(moved, len(x))):
        lo, hi = max(a, b - WINDOW), min(c, b + WINDOW)
        tau, _ = _energy(x[lo:hi])
        if tau > 0:
            moved[i] = lo + tau
    return moved


def find(values: Sequence[float], max_p: float = MAX_P) -> list[Change]:
    """The change points of a series (in order), on the logs of its values: a 5% step is the
    same size at any level."""
    x = np.log(np.asarray(values, float))
    n = len(x)
    points: list[int] = []
    todo = [(0, n)]
    while todo:
        lo, hi = todo.pop()
        tau = _candidate(x, lo, hi)
        if tau is None or _test(x[lo:tau], x[tau:hi]) > max_p:
            continue
        points.append(tau)
        todo += [(lo, tau), (tau, hi)]
    points.sort()
    while points:  # the weakest goes until every one is significant between its neighbours
        ps = [_test(x[a:b], x[b:c]) for a, b, c in _bounds(points, n)]
        worst = int(np.argmax(ps))
        if ps[worst] <= max_p:
            break
        points.pop(worst)
    points = _relocate(x, points)
    out = []
    for a, b, c in _bounds(points, n):
        before, after = x[a:b], x[b:c]
        diff = float(after.mean() - before.mean())
        vb, va = before.var(ddof=1) / len(before), after.var(ddof=1) / len(after)
        se = float(np.sqrt(vb + va))
        dof = (vb + va) ** 2 / (vb**2 / (len(before) - 1) + va**2 / (len(after) - 1)) if se else 1e9
        half = float(scipy.stats.t.ppf(0.975, max(dof, 1.0))) * se
        out.append(
            Change(
                b,
                float(np.exp(diff)),
                float(np.exp(diff - half)),
                float(np.exp(diff + half)),
                _test(before, after),
            )
        )
    return out
