"""Intervals, paired tests, multiplicity correction and detectable effects for the leaderboard.

Written out here rather than taken from scipy/statsmodels because neither is a steerboard dependency and each
formula is short; ``tests/test_leaderboard_stats.py`` checks every function against scipy/statsmodels where those
are installed:

- :func:`wilson`: Wilson score interval of a proportion (never the Wald interval, which collapses at 0 and 1).
- :func:`newcombe_paired`: Newcombe's hybrid score interval (his method 10) for the difference of two paired
  proportions, built from the two Wilson intervals and the correlation of the pairs.
- :func:`sign_test`: exact two-sided sign test; on the discordant pairs of 0/1 outcomes it is McNemar's exact test.
- :func:`wilcoxon_signed_rank`: two-sided Wilcoxon signed-rank test of paired differences (exact distribution
  for up to 50 non-zero differences without ties, normal approximation with tie correction otherwise).
- :func:`holm`: Holm's step-down adjusted p-values.
- :func:`paired_bootstrap_ci`: seeded percentile bootstrap over items of any statistic of paired arrays.
- :func:`mde_binary_paired` / :func:`mde_continuous_paired`: the smallest paired change a test at
  :data:`ALPHA` detects with :data:`POWER` power for a given n.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

Z95 = 1.959963984540054
Z80 = 0.8416212335729143  # one-sided normal quantile for 80 % power
ALPHA = 0.05
POWER = 0.8
BOOTSTRAP_RESAMPLES = 2000


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
    half = z * math.sqrt(max(0.0, p * (1 - p)) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_ci(mean: float, var: float | None, n: int, z: float = Z95) -> tuple[float, float]:
    """Normal-approximation interval for a mean of non-binary values."""
    if n <= 1 or var is None or math.isnan(var):
        return mean, mean
    half = z * math.sqrt(var / n)
    return mean - half, mean + half


def newcombe_paired(both: int, only_a: int, only_b: int, neither: int, z: float = Z95) -> tuple[float, float]:
    """95 % interval for ``p_a - p_b`` of paired 0/1 outcomes (Newcombe 1998, method 10, no continuity correction).

    Args:
        both: Pairs where both are 1.
        only_a: Pairs where ``a`` is 1 and ``b`` is 0.
        only_b: Pairs where ``a`` is 0 and ``b`` is 1.
        neither: Pairs where both are 0.

    Returns:
        (low, high) of the difference, within [-1, 1]; (-1, 1) for no pairs.
    """
    n = both + only_a + only_b + neither
    if n == 0:
        return -1.0, 1.0
    pa, pb = (both + only_a) / n, (both + only_b) / n
    la, ua = wilson(both + only_a, n, z)
    lb, ub = wilson(both + only_b, n, z)
    denom = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = (both * neither - only_a * only_b) / math.sqrt(denom) if denom > 0 else 0.0
    d = pa - pb
    lo = d - math.sqrt(max(0.0, (pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2))
    hi = d + math.sqrt(max(0.0, (ua - pa) ** 2 - 2 * phi * (ua - pa) * (pb - lb) + (pb - lb) ** 2))
    return max(-1.0, lo), min(1.0, hi)


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


def _ranks(values: Sequence[float]) -> list[float]:
    """Average ranks (1-based) of ``values``, ties sharing the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


EXACT_WILCOXON_MAX_N = 50


def wilcoxon_signed_rank(diffs: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (zero differences dropped).

    Exact null distribution when at most :data:`EXACT_WILCOXON_MAX_N` non-zero differences remain and none tie in
    absolute value; otherwise the normal approximation with the tie-corrected variance (no continuity correction).

    Returns:
        p in [0, 1]; 1.0 when every difference is zero.
    """
    d = [float(x) for x in diffs if x != 0 and not math.isnan(x)]
    n = len(d)
    if n == 0:
        return 1.0
    absd = [abs(x) for x in d]
    ranks = _ranks(absd)
    w_plus = sum(r for r, x in zip(ranks, d, strict=True) if x > 0)
    ties = len(set(absd)) < n
    if n <= EXACT_WILCOXON_MAX_N and not ties:
        # number of subsets of {1..n} with each rank sum: counts[s]
        total = n * (n + 1) // 2
        counts = [0] * (total + 1)
        counts[0] = 1
        for r in range(1, n + 1):
            for s in range(total, r - 1, -1):
                counts[s] += counts[s - r]
        w = int(round(min(w_plus, total - w_plus)))
        tail = sum(counts[: w + 1]) / 2**n
        return min(1.0, 2.0 * tail)
    mean = n * (n + 1) / 4
    var = n * (n + 1) * (2 * n + 1) / 24
    groups: dict[float, int] = {}
    for a in absd:
        groups[a] = groups.get(a, 0) + 1
    var -= sum(t**3 - t for t in groups.values()) / 48
    if var <= 0:
        return 1.0
    zstat = (w_plus - mean) / math.sqrt(var)
    return min(1.0, math.erfc(abs(zstat) / math.sqrt(2)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given); a flag is ``p_adj < alpha``."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adj = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adj[i] = running
    return adj


def _binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    return min(1.0, sum(
        math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq)
        for i in range(k, n + 1)
    ))


def sign_test_critical(alpha: float = ALPHA) -> int:
    """Fewest discordant pairs, all in one direction, that the exact two-sided sign test calls significant."""
    k = 1
    while 2 * 0.5**k > alpha:
        k += 1
    return k


def mde_binary_paired(n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Smallest paired change in a 0/1 metric that McNemar's exact test detects with ``power`` at ``alpha``.

    The favourable case: a share ``delta`` of the ``n`` items changes, all in the same direction, so the number
    of discordant pairs is Binomial(n, delta) and the test rejects once it reaches :func:`sign_test_critical`.
    Real changes that also move items the other way need more.

    Returns:
        ``delta`` in (0, 1] (to 0.001), or None when no change can be detected (``n`` below the critical count).
    """
    k = sign_test_critical(alpha)
    if n < k:
        return None
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if _binom_sf(k, n, mid) >= power:
            hi = mid
        else:
            lo = mid
    return math.ceil(hi * 1000) / 1000


def mde_continuous_paired(sd_diff: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Smallest mean paired change a Wilcoxon signed-rank test detects with ``power`` (normal approximation).

    ``(z_{1-alpha/2} + z_power) * sd / sqrt(n)``, divided by the square root of the test's asymptotic relative
    efficiency against the t-test for normal differences (3/pi). None when ``n`` < 6 (no two-sided exact p can
    reach 0.05) or the spread is unknown.
    """
    if n < 6 or sd_diff is None or not math.isfinite(sd_diff):
        return None
    if alpha != ALPHA or power != POWER:
        raise ValueError("mde_continuous_paired: only alpha=0.05 and power=0.8 are tabulated")
    return (Z95 + Z80) * sd_diff / math.sqrt(n) / math.sqrt(3 / math.pi)


def seed_of(*parts: Any) -> int:
    """A stable 32-bit seed from any labels (bootstrap draws do not depend on build order)."""
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def paired_bootstrap_ci(
    arrays: Sequence[Sequence[Sequence[float]]],
    stat: Callable[[list[Any]], Any],
    seed: int,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic of paired means, resampling items within each group.

    Args:
        arrays: One entry per group (metric): ``(a, b)``, equal-length per-item values of the method and the
            control on the same items; each group's items are resampled with their pairs kept together,
            independently of the other groups.
        stat: Maps the resampled groups, a list of ``(mean_a, mean_b)`` numpy arrays of shape ``(resamples,)``,
            to one value per resample.
        seed: Seed of the draws.
        resamples: Number of bootstrap resamples.
        level: Interval coverage.

    Returns:
        (low, high); nan where ``stat`` is undefined on half the resamples or more.

    A group of 0/1 pairs is resampled through its four cell counts (a multinomial draw of n pairs over the
    cells (1,1), (1,0), (0,1), (0,0)), which is the same distribution as drawing n pairs with replacement and
    costs four numbers per resample instead of n.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    groups = []
    for a_in, b_in in arrays:
        a, b = np.asarray(a_in, dtype=float), np.asarray(b_in, dtype=float)
        n = len(a)
        if n == 0:
            groups.append((np.full(resamples, np.nan), np.full(resamples, np.nan)))
            continue
        if np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all():
            cells = np.array([np.sum((a == 1) & (b == 1)), np.sum((a == 1) & (b == 0)),
                              np.sum((a == 0) & (b == 1)), np.sum((a == 0) & (b == 0))], dtype=float)
            c = rng.multinomial(n, cells / n, size=resamples)
            groups.append(((c[:, 0] + c[:, 1]) / n, (c[:, 0] + c[:, 2]) / n))
        else:
            idx = rng.integers(0, n, size=(resamples, n))
            groups.append((a[idx].mean(axis=1), b[idx].mean(axis=1)))
    vals = np.asarray(stat(groups), dtype=float)
    vals = vals[np.isfinite(vals)]
    if len(vals) < resamples / 2:
        return float("nan"), float("nan")
    q = (1 - level) / 2
    return float(np.quantile(vals, q)), float(np.quantile(vals, 1 - q))
