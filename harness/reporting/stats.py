"""Intervals from raw samples, for the check's verdicts and the report's error bars.

Trials measured in pairs (a same-run A/B: both sides of a trial back to back) are judged on the
logs of each pair's ratio by Wilcoxon's signed-rank test, with the Hodges-Lehmann estimate and
its exact interval. With two or more trials a side otherwise (separate processes, apart in
time: they carry the run-to-run variation one window cannot show), the interval of a ratio is
Welch's t interval on the log of each trial's value: honest with few trials, where a bootstrap
over three values is far too narrow. With one trial a side only the steps within one window are
there to resample (a seeded bootstrap), which sees within-window noise only; the check says so.
Same rows, same verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats

RESAMPLES = 2000
LEVEL = 0.95  # of an interval; and of each one-sided bound (`Estimate.bounds`)
_BUDGET = 4_000_000  # values drawn per side per bootstrap: bounds time and memory

Stat = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Estimate:
    """A ratio current / base, its 95% interval, and the two-sided p-value of "no change"
    (ratio 1) from the same samples: the check corrects these p-values for the family of
    comparisons one run makes (holm), which one interval cannot do. `bounds` are the one-sided
    95% bounds below and above (each alone holds 95% of the time; together a 90% interval):
    "no worse than 1 + t" is a one-sided claim, judged by one of them."""

    point: float
    lo: float
    hi: float
    p: float
    bounds: tuple[float, float]
    # the noise the test saw, for what it could detect: paired trials ("pairs", the log ratios),
    # trials apart ("t", (se of the log ratio, degrees of freedom)), or none
    noise: tuple[str, tuple[float, ...]] = ("", ())


def detectable(
    estimate: Estimate, alpha: float, tolerance: float, higher_is_better: bool = False
) -> float | None:
    """The smallest slowdown (a ratio above 1 in the direction of worse) that this run's noise
    would have let the test call significant at `alpha` and beyond `tolerance`: for a check,
    what the runner can see. None where the samples give no test, inf where no slowdown
    could be (too few paired trials for `alpha`)."""
    kind, values = estimate.noise
    if kind == "pairs":
        d = np.asarray(values, float)
        centre = float(np.median((d[:, None] + d[None, :])[np.triu_indices(len(d))] / 2))
        noise = (d - centre) * (-1 if higher_is_better else 1)  # worse is positive
        if _signed_rank_p(np.abs(noise) + 1e-12) > alpha:
            return math.inf  # even every pair worse would not be significant at alpha
        lo, hi = 0.0, float(np.max(np.abs(noise))) + 1e-9
        for _ in range(50):  # the smallest shift of the noise that the test calls significant
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if _signed_rank_p(noise + mid) <= alpha else (mid, hi)
        return max(math.exp(hi), 1 + tolerance)
    if kind == "t":
        se, df = values
        return max(math.exp(float(scipy.stats.t.ppf(1 - alpha / 2, df)) * se), 1 + tolerance)
    return None


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: rejecting where adjusted <= alpha keeps the chance
    of any false rejection in the family at most alpha, whatever the tests' dependence."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def _draws(trials: Sequence[np.ndarray], rng: np.random.Generator, stat: Stat) -> np.ndarray:
    """RESAMPLES values of `stat` over two-stage resamples of `trials`."""
    k = len(trials)
    lengths = np.array([len(t) for t in trials])
    per_trial = int(max(1, min(lengths.max(), _BUDGET // (RESAMPLES * k))))
    table = np.full((k, lengths.max()), np.nan)
    for i, values in enumerate(trials):
        table[i, : len(values)] = values
    picks = rng.integers(0, k, (RESAMPLES, k)) if k > 1 else np.zeros((RESAMPLES, 1), int)
    steps = (rng.random((RESAMPLES, k, per_trial)) * lengths[picks][..., None]).astype(int)
    drawn = table[picks[..., None], steps].reshape(RESAMPLES, -1)
    return stat(drawn, axis=1)


def ratio(
    base: Sequence[Sequence[float]],
    current: Sequence[Sequence[float]],
    stat: Stat = np.median,
    seed: int = 0,
) -> Estimate:
    """stat(current) / stat(base): the point estimate, a 95% bootstrap interval and the
    bootstrap's two-sided p-value of no change."""
    b = [np.asarray(t, float) for t in base if len(t)]
    c = [np.asarray(t, float) for t in current if len(t)]
    point = float(stat(np.concatenate(c)) / stat(np.concatenate(b)))
    rng = np.random.default_rng(seed)
    draws = _draws(c, rng, stat) / _draws(b, rng, stat)
    tail = (1 - LEVEL) / 2
    lo, below, above, hi = np.quantile(draws, [tail, 1 - LEVEL, LEVEL, 1 - tail])
    p = min(1.0, 2 * min(float(np.mean(draws <= 1)), float(np.mean(draws >= 1))))
    return Estimate(
        point,
        float(min(lo, point)),
        float(max(hi, point)),
        max(p, 1 / RESAMPLES),
        (float(min(below, point)), float(max(above, point))),
    )


def t_quantile(df: float, level: float = 1 - (1 - LEVEL) / 2) -> float:
    """Student's t quantile; by default the half-width factor of a two-sided 95% interval."""
    return float(scipy.stats.t.ppf(level, max(df, 1.0)))


def trial_ratio(base: Sequence[float], current: Sequence[float]) -> Estimate:
    """current / base from one value per trial (>= 2 a side): the ratio of geometric means,
    Welch's 95% t interval on the logs and its p-value."""
    b, c = np.log(np.asarray(base, float)), np.log(np.asarray(current, float))
    vb, vc = b.var(ddof=1) / len(b), c.var(ddof=1) / len(c)
    se = float(np.sqrt(vb + vc))
    df = (vb + vc) ** 2 / (vb**2 / (len(b) - 1) + vc**2 / (len(c) - 1)) if se > 0 else 1e9
    diff = float(c.mean() - b.mean())
    half, one_sided = t_quantile(df) * se, t_quantile(df, LEVEL) * se
    p = float(2 * scipy.stats.t.sf(abs(diff) / se, max(df, 1.0))) if se > 0 else float(diff == 0)
    return Estimate(
        float(np.exp(diff)),
        float(np.exp(diff - half)),
        float(np.exp(diff + half)),
        p,
        (float(np.exp(diff - one_sided)), float(np.exp(diff + one_sided))),
        ("t", (se, max(df, 1.0))),
    )


def _signed_rank_null(n: int) -> np.ndarray:
    """P(T+ = t), t = 0 .. n(n+1)/2: the exact null distribution of Wilcoxon's signed-rank
    statistic for n pairs (each rank's sign a fair coin), by counting subsets of ranks."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    return counts / 2.0**n


def _signed_rank_p(d: np.ndarray) -> float:
    """Two-sided exact p-value of Wilcoxon's signed-rank test of `d` centred at 0 (zeros
    dropped; ties in |d| share ranks, then the exact table is approximate)."""
    d = d[d != 0]
    if not len(d):
        return 1.0
    t_plus = float(np.sum(scipy.stats.rankdata(np.abs(d))[d > 0]))
    null = _signed_rank_null(len(d))
    t = np.arange(len(null))
    return float(min(1.0, 2 * min(null[t <= t_plus + 1e-9].sum(), null[t >= t_plus - 1e-9].sum())))


def paired_ratio(base: Sequence[float], current: Sequence[float]) -> Estimate:
    """current / base from trials measured in pairs (both sides of a trial back to back), so
    what drifts over a run (load, heat) cancels within each pair. On the log of each pair's
    ratio: the Hodges-Lehmann estimate (median of the pairwise averages), its exact
    distribution-free interval of at least 95% (from the signed-rank distribution; with fewer
    than 6 pairs, the averages' full range), its one-sided 95% bounds the same way, and
    Wilcoxon's signed-rank p-value. It weighs the
    sizes of the differences, not only their signs (under normal noise the sign test needs
    ~1.5x the pairs for the same power), and one bad trial cannot move it far."""
    d = np.log(np.asarray(current, float) / np.asarray(base, float))
    n = len(d)
    i, j = np.triu_indices(n)
    walsh = np.sort((d[i] + d[j]) / 2)
    cdf = np.cumsum(_signed_rank_null(n))

    def outside(tail: float) -> int:  # the largest k with P(T+ <= k) <= tail: the k smallest
        return max(int(np.sum(cdf <= tail)) - 1, 0)  # (k largest) averages lie below (above)

    k, one = outside((1 - LEVEL) / 2), outside(1 - LEVEL)
    return Estimate(
        float(np.exp(np.median(walsh))),
        float(np.exp(walsh[k])),
        float(np.exp(walsh[len(walsh) - 1 - k])),
        _signed_rank_p(d),
        (float(np.exp(walsh[one])), float(np.exp(walsh[len(walsh) - 1 - one]))),
        ("pairs", tuple(float(v) for v in d)),
    )


def trial_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """One value per trial (>= 2): the geometric mean and its 95% t interval."""
    logs = np.log(np.asarray(values, float))
    half = t_quantile(len(logs) - 1) * float(logs.std(ddof=1)) / np.sqrt(len(logs))
    mean = float(logs.mean())
    return float(np.exp(mean)), float(np.exp(mean - half)), float(np.exp(mean + half))
