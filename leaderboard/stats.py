"""Interval estimates and paired tests for per-sample 0/1 (or bounded) values.

Written out here (not scipy) because scipy is not a steerboard dependency and the two formulas are short:
the Wilson score interval and the exact two-sided sign test, which for 0/1 outcomes is McNemar's exact test on
the discordant pairs.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion.

    Args:
        successes: Number of 1s (may be fractional for bounded values; then it is an approximation).
        n: Number of samples.
        z: Normal quantile (default 95 %).

    Returns:
        (low, high); (0, 1) when ``n`` is 0.
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_ci(mean: float, var: float | None, n: int, z: float = Z95) -> tuple[float, float]:
    """Normal-approximation interval for a mean of non-binary values."""
    if n <= 1 or var is None or math.isnan(var):
        return mean, mean
    half = z * math.sqrt(var / n)
    return mean - half, mean + half


def _log_binom_pmf(k: int, n: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)


def sign_test(up: int, down: int) -> float:
    """Exact two-sided sign test p-value (McNemar's exact test when ``up``/``down`` are discordant pairs).

    Args:
        up: Pairs where the method's value is higher than the control's.
        down: Pairs where it is lower.

    Returns:
        p-value in [0, 1] (1.0 when there are no discordant pairs).
    """
    n = up + down
    if n == 0:
        return 1.0
    k = min(up, down)
    tail = sum(math.exp(_log_binom_pmf(i, n)) for i in range(k + 1))
    return min(1.0, 2.0 * tail)
