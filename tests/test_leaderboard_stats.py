"""The leaderboard's hand-written statistics (``steerboard.leaderboard.stats``) against scipy/statsmodels.

steerboard does not depend on scipy or statsmodels (the formulas are short); the development environment has
both, so each function is checked against them here, and skipped only where they are absent.
"""

from __future__ import annotations

import random

import pytest

from steerboard.leaderboard import stats


def test_wilson_matches_statsmodels() -> None:
    sm = pytest.importorskip("statsmodels.stats.proportion")
    for k, n in ((0, 6), (6, 6), (5, 10), (1, 25), (24, 25), (73, 300)):
        lo, hi = stats.wilson(k, n)
        elo, ehi = sm.proportion_confint(k, n, alpha=0.05, method="wilson")
        assert (lo, hi) == pytest.approx((elo, ehi), abs=1e-9)
    # never the degenerate Wald interval at 0 or 1
    assert stats.wilson(0, 6)[1] > 0.3 and stats.wilson(6, 6)[0] < 0.7


def test_sign_test_is_the_exact_binomial_test() -> None:
    sp = pytest.importorskip("scipy.stats")
    for up, down in ((10, 0), (2, 9), (3, 3), (0, 6), (1, 7), (12, 30)):
        assert stats.sign_test(up, down) == pytest.approx(sp.binomtest(up, up + down, 0.5).pvalue)
    assert stats.sign_test(0, 0) == 1.0


def test_wilcoxon_matches_scipy_exact_and_approximate() -> None:
    sp = pytest.importorskip("scipy.stats")
    rng = random.Random(3)
    for n in (6, 12, 30):  # no ties: scipy's exact distribution
        d = [rng.gauss(0.2, 1.0) for _ in range(n)]
        assert stats.wilcoxon_signed_rank(d) == pytest.approx(sp.wilcoxon(d, method="exact").pvalue, rel=1e-9)
    d = [round(rng.gauss(0.1, 1.0), 1) for _ in range(80)]  # ties and zeros: normal approximation
    exp = sp.wilcoxon(d, zero_method="wilcox", correction=False, method="approx").pvalue
    assert stats.wilcoxon_signed_rank(d) == pytest.approx(exp, rel=1e-9)
    assert stats.wilcoxon_signed_rank([0.0, 0.0]) == 1.0


def test_holm_matches_statsmodels() -> None:
    mt = pytest.importorskip("statsmodels.stats.multitest")
    ps = [0.01, 0.04, 0.03, 0.2, 0.001, 0.5]
    assert stats.holm(ps) == pytest.approx(list(mt.multipletests(ps, method="holm")[1]))


def test_newcombe_paired_interval() -> None:
    sm = pytest.importorskip("statsmodels.stats.proportion")
    # uncorrelated pairs (ad = bc, phi = 0): the paired hybrid score interval is the independent one
    lo, hi = stats.newcombe_paired(2, 4, 1, 2)
    exp = sm.confint_proportions_2indep(6, 9, 3, 9, method="newcomb", compare="diff")
    assert (lo, hi) == pytest.approx(tuple(exp), abs=1e-9)
    # all pairs concordant: the difference is 0 but the interval is not collapsed
    lo, hi = stats.newcombe_paired(0, 0, 0, 20)
    assert lo < 0 < hi
    # coverage of correlated pairs by simulation (nominal 95 %)
    rng = random.Random(1)
    hits = 0
    for _ in range(1000):
        cells = [0, 0, 0, 0]
        for _ in range(40):
            u = rng.random()
            cells[0 if u < 0.3 else 1 if u < 0.45 else 2 if u < 0.55 else 3] += 1
        lo, hi = stats.newcombe_paired(*cells)
        hits += lo <= 0.05 <= hi  # true difference 0.15 - 0.10
    assert hits / 1000 > 0.92


def test_minimum_detectable_effects() -> None:
    assert stats.sign_test_critical() == 6  # 2 * 0.5**6 = 0.031 < 0.05 <= 2 * 0.5**5
    assert stats.mde_binary_paired(5) is None  # even 5 of 5 changed items cannot reach p < 0.05
    m25 = stats.mde_binary_paired(25)
    assert 0.25 < m25 < 0.35
    # the definition: 80 % power exactly at the MDE
    sp = pytest.importorskip("scipy.stats")
    assert sp.binom.sf(5, 25, m25) >= 0.8 > sp.binom.sf(5, 25, m25 - 0.002)
    assert stats.mde_binary_paired(200) < stats.mde_binary_paired(100) < m25
    assert stats.mde_continuous_paired(1.0, 100) == pytest.approx(2.8016 / 10 / (3 / 3.141592653589793) ** 0.5, rel=1e-3)
    assert stats.mde_continuous_paired(1.0, 5) is None


def test_paired_bootstrap_is_seeded_and_covers_the_mean() -> None:
    import numpy as np

    rng = random.Random(0)
    a = [rng.random() < 0.6 for _ in range(200)]
    b = [rng.random() < 0.4 for _ in range(200)]

    def stat(groups):
        ((x, y),) = groups
        return x - y

    ci1 = stats.paired_bootstrap_ci([(a, b)], stat, seed=5)
    ci2 = stats.paired_bootstrap_ci([(a, b)], stat, seed=5)
    assert ci1 == ci2
    d = np.mean(a) - np.mean(b)
    assert ci1[0] < d < ci1[1]
    # 0/1 pairs are drawn through their cell counts: the same distribution as resampling the pairs
    af, bf = [float(x) + 1e-12 for x in a], [float(x) for x in b]  # not 0/1: the item-resampling path
    ci3 = stats.paired_bootstrap_ci([(af, bf)], stat, seed=5, resamples=20000)
    ci4 = stats.paired_bootstrap_ci([(a, b)], stat, seed=6, resamples=20000)
    assert ci3 == pytest.approx(ci4, abs=0.01)
