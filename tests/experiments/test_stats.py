"""Tests for stats.py: estimates and intervals against scipy's own bootstrap, and verdicts from the spread."""

import numpy as np
import pytest
from scipy.stats import bootstrap

from monalisa.experiments import stats
from monalisa.experiments.studies.claims import seed_gap

SAMPLE = [24.31, 23.87, 24.62, 24.05, 23.70]


def scipy_interval(samples, statistic, method):
    result = bootstrap(samples, statistic, n_resamples=stats.RESAMPLES, confidence_level=stats.CONFIDENCE,
                       method=method, vectorized=True, rng=np.random.default_rng(stats.RANDOM_STATE))
    return result.confidence_interval.low, result.confidence_interval.high


def test_an_estimate_is_the_mean_sd_and_scipys_bca_interval():
    estimate = stats.estimate(SAMPLE)
    assert estimate.mean == pytest.approx(np.mean(SAMPLE)) and estimate.std == pytest.approx(np.std(SAMPLE, ddof=1))
    low, high = scipy_interval((np.array(SAMPLE),), lambda x, axis=-1: np.mean(x, axis=axis), "BCa")
    assert (estimate.low, estimate.high) == pytest.approx((low, high))
    assert estimate.method == "BCa bootstrap" and estimate.low < estimate.mean < estimate.high


def test_two_values_get_the_percentile_interval_and_one_none():
    two = stats.estimate([1.0, 2.0])
    low, high = scipy_interval((np.array([1.0, 2.0]),), lambda x, axis=-1: np.mean(x, axis=axis), "percentile")
    assert two.method == "percentile bootstrap" and (two.low, two.high) == pytest.approx((low, high))
    one = stats.estimate([3.0, None, float("nan")])  # missing figures are dropped
    assert one.n == 1 and one.mean == 3.0 and one.low is None
    assert stats.estimate([]).mean is None


def test_identical_values_have_an_interval_of_that_value():
    same = stats.estimate([20.5] * 4)
    assert (same.low, same.high, same.method) == (20.5, 20.5, "no spread")


def test_the_difference_interval_is_scipys_unpaired_bootstrap():
    a, b = np.array(SAMPLE), np.array([23.1, 23.4, 22.8, 23.3])
    gap = stats.difference(a, b)
    low, high = scipy_interval((a, b), lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis), "BCa")
    assert gap.mean == pytest.approx(a.mean() - b.mean()) and (gap.low, gap.high) == pytest.approx((low, high))


def test_probability_of_improvement_counts_every_pair():
    assert stats.probability_of_improvement([3, 4], [1, 2]).mean == 1.0
    assert stats.probability_of_improvement([1, 2], [3, 4]).mean == 0.0
    assert stats.probability_of_improvement([1, 3], [2, 2]).mean == 0.5
    assert stats.probability_of_improvement([2], [2]).mean == 0.5  # ties count half


@pytest.mark.parametrize("low, high, expected", [
    (0.6, 1.2, stats.SUPPORTED), (-1.2, -0.6, stats.REFUTED), (0.2, 1.2, stats.INCONCLUSIVE),
    (-0.4, 0.4, stats.INCONCLUSIVE), (None, None, stats.INCONCLUSIVE),
])
def test_a_verdict_needs_the_whole_interval_past_the_margin(low, high, expected):
    gap = stats.Estimate((0.0,), 0.0, None, low, high, "BCa bootstrap" if low is not None else None)
    assert stats.verdict(gap, 0.5) == expected


def row(label, finals):
    return {"label": label, "status": "complete", "psnr": float(np.mean(finals)), "seeds": list(range(len(finals))),
            "per_seed": [{"label": f"{label}-s{i}", "status": "complete", "psnr": v} for i, v in enumerate(finals)]}


def test_a_verdict_flips_to_inconclusive_when_only_the_spread_grows():
    ours, theirs = np.array([25.0, 25.1, 24.9, 25.05]), np.array([24.0, 24.1, 23.9, 23.95])
    supported, evidence = seed_gap(row("a", ours), row("b", theirs), 0.5)
    assert supported is True and "95% interval" in evidence and "4 and 4 seeds" in evidence
    spread = 12  # the same means, each seed 12x further from its mean
    wide_ours, wide_theirs = ours.mean() + spread * (ours - ours.mean()), theirs.mean() + spread * (theirs - theirs.mean())
    supported, _ = seed_gap(row("a", wide_ours), row("b", wide_theirs), 0.5)
    assert supported is None
    supported, _ = seed_gap(row("a", theirs), row("b", ours), 0.5)  # the other way round: refuted
    assert supported is False


def test_one_seed_each_never_decides():
    supported, evidence = seed_gap(row("a", [30.0]), row("b", [20.0]), 0.5)
    assert supported is None and "no interval" in evidence
