"""The report's statistics on plain numbers, no I/O: has a learning curve levelled off, and does
one measure rank the runs as another does."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL_TAIL = 0.2
"""The last share of the schedule over which a levelled-off curve gains less than LEVEL_GAIN."""
LEVEL_GAIN = 1.0
"""AP points (x 100): the most a levelled-off curve may gain over its last LEVEL_TAIL."""


@dataclass(frozen=True)
class Levelling:
    """The levelling-off check of a learning curve (docs/augmentation.md's definition).

    Attributes:
        start, end: the steps compared: the last curve point at or before (1 - tail) of the
            last step, and the last step.
        gain: mean AP (x 100, over the seeds) at `end` minus at `start`.
        levelled: gain < LEVEL_GAIN.
        seeds: how many seeds the mean is over (those with both points).
    """

    start: int
    end: int
    gain: float
    levelled: bool
    seeds: int


def levelling(
    curves: list[dict[int, float]], *, tail: float = LEVEL_TAIL, max_gain: float = LEVEL_GAIN
) -> Levelling | None:
    """Whether the mean of the seeds' curves gained less than `max_gain` over the last `tail`
    of the steps.

    Args:
        curves: per seed, step -> AP x 100 (one learning curve each).
        tail: share of the last step that the check looks back over.
        max_gain: AP points.

    Returns:
        The check, or None when no seed has a point at or before (1 - tail) of its last step
        and the last step itself.
    """
    curves = [c for c in curves if c]
    if not curves:
        return None
    end = max(max(c) for c in curves)
    starts = [s for c in curves for s in c if s <= (1.0 - tail) * end]
    if not starts:
        return None
    start = max(starts)
    both = [c for c in curves if start in c and end in c]
    if not both:
        return None
    gain = float(np.mean([c[end] - c[start] for c in both]))
    return Levelling(start, end, gain, gain < max_gain, len(both))


EXACT_PAIRS = 8
"""Up to this many pairs `rank_correlation` enumerates all n! pairings for its p-value."""


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's rank correlation of paired measurements (ties get their mean rank)."""

    rho: float
    p_value: float
    n: int


def rank_correlation(x: list[float], y: list[float]) -> RankCorrelation | None:
    """Spearman's rho of x and y (scipy.stats.spearmanr); None for fewer than 3 pairs or a
    constant side, where it is undefined. The two-sided p-value is exact (every pairing of
    x with y, `scipy.stats.permutation_test`) up to `EXACT_PAIRS` pairs, where spearmanr's
    t approximation is far off (it gives p ~ 1e-24 for a perfect rank order of 5 pairs,
    whose exact p is 2/120); above that, the approximation."""
    from scipy.stats import permutation_test, spearmanr

    if len(x) != len(y):
        raise ValueError(f"rank_correlation: {len(x)} x values against {len(y)} y values")
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    xs, ys = np.asarray(x, np.float64), np.asarray(y, np.float64)
    result = spearmanr(xs, ys)
    p_value = float(result.pvalue)
    if len(x) <= EXACT_PAIRS:
        exact = permutation_test(
            (xs,), lambda a: spearmanr(a, ys).statistic, permutation_type="pairings",
            n_resamples=np.inf,
        )  # fmt: skip
        p_value = float(exact.pvalue)
    return RankCorrelation(float(result.statistic), p_value, len(x))
