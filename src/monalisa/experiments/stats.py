"""Several seeds into figures a reader can trust: mean, spread, 95% intervals, and verdicts.

One seed of a recipe is one draw: two seeds of the same recipe can land further
apart than the margins the studies use. So every entry of a comparison may train
several seeds, and each figure of the table becomes an ``Estimate``: the mean,
the sample standard deviation, and a 95% confidence interval of the mean.

Intervals come from ``scipy.stats.bootstrap``: the bias-corrected and accelerated
(BCa) bootstrap, 10,000 resamples, with a fixed random state so that a report is
the same each time it is written. With two seeds BCa is undefined (its
acceleration needs a jackknife of at least three), and the percentile bootstrap
stands in; the interval says which it is. A bootstrap interval from 3-5 seeds is
narrower than the truth more often than 5% of the time (Agarwal et al. 2021 make
the same caveat), which is one more reason for a margin on top of it.

A claim "A beats B by at least ``margin``" is decided from the interval of the
difference of the means (each entry's seeds resampled on their own):
*supported* when the whole interval is above ``margin``, *refuted* when it is
entirely below ``-margin`` (B beats A by the margin), *inconclusive* otherwise.
The probability of improvement, P(a seed of A scores above a seed of B), with
its own interval, is reported beside it (Agarwal et al. 2021, rliable).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 10_000
RANDOM_STATE = 0  # the seed of the bootstrap's generator: the same interval every time a report is written

SUPPORTED, REFUTED, INCONCLUSIVE = "supported", "refuted", "inconclusive"
# A verdict's word as a claim's "supported" field: True, False or None (table.check_claims).
SUPPORTED_VALUE = {SUPPORTED: True, REFUTED: False, INCONCLUSIVE: None}


@dataclass(frozen=True)
class Estimate:
    """A figure over seeds: ``values`` (one per seed that has it), their mean, sample standard
    deviation and a ``CONFIDENCE`` interval of the mean (None with fewer than two values)."""

    values: tuple[float, ...]
    mean: float | None
    std: float | None
    low: float | None
    high: float | None
    method: str | None  # "BCa bootstrap", "percentile bootstrap", "no spread" or None (no interval)

    @property
    def n(self) -> int:
        return len(self.values)

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "low": self.low, "high": self.high, "n": self.n,
                "method": self.method, "values": list(self.values)}

    def shown(self, digits: int = 2, unit: str = "") -> str:
        """'24.31 ± 0.42 dB [23.90, 24.70]': mean ± standard deviation [95% interval]."""
        if self.mean is None:
            return "—"
        text = f"{self.mean:.{digits}f}"
        if self.std is not None and self.n > 1:
            text += f" ± {self.std:.{digits}f}"
        text += unit
        if self.low is not None:
            text += f" [{self.low:.{digits}f}, {self.high:.{digits}f}]"
        return text


def estimate(values) -> Estimate:
    """The mean of ``values`` (None and NaN dropped: a seed without the figure) and its interval."""
    kept = _kept(values)
    if not len(kept):
        return Estimate((), None, None, None, None, None)
    mean = float(np.mean(kept))
    if len(kept) == 1:
        return Estimate(tuple(kept.tolist()), mean, 0.0, None, None, None)
    std = float(np.std(kept, ddof=1))
    low, high, method = _interval((kept,), _mean_statistic)
    return Estimate(tuple(kept.tolist()), mean, std, low, high, method)


def difference(a, b) -> Estimate:
    """mean(a) - mean(b), with the interval from resampling each sample on its own (unpaired)."""
    a = _kept(a)
    b = _kept(b)
    if not len(a) or not len(b):
        return Estimate((), None, None, None, None, None)
    mean = float(np.mean(a) - np.mean(b))
    if len(a) < 2 or len(b) < 2:
        return Estimate((mean,), mean, None, None, None, None)
    low, high, method = _interval((a, b), _difference_statistic)
    return Estimate((mean,), mean, None, low, high, method)


def probability_of_improvement(a, b) -> Estimate:
    """P(X > Y) + P(X = Y) / 2 for X a seed of ``a`` and Y one of ``b``, with its interval."""
    a = _kept(a)
    b = _kept(b)
    if not len(a) or not len(b):
        return Estimate((), None, None, None, None, None)
    value = float(_improvement_statistic(a, b))
    if len(a) < 2 or len(b) < 2:
        return Estimate((value,), value, None, None, None, None)
    low, high, method = _interval((a, b), _improvement_statistic)
    return Estimate((value,), value, None, low, high, method)


def verdict(gap: Estimate, margin: float) -> str:
    """SUPPORTED when ``gap``'s interval lies above ``margin``, REFUTED below ``-margin``, else INCONCLUSIVE."""
    if gap.low is None:
        return INCONCLUSIVE
    if gap.low > margin:
        return SUPPORTED
    if gap.high < -margin:
        return REFUTED
    return INCONCLUSIVE


def overlap(a: Estimate, b: Estimate) -> bool:
    """Whether two estimates' intervals overlap (an estimate without one overlaps everything)."""
    if a.low is None or b.low is None:
        return True
    return a.low <= b.high and b.low <= a.high


# -----------------------------------------------------------------------------


def _kept(values) -> np.ndarray:
    """The values a figure has (None and NaN dropped: a seed without it), as float64."""
    return np.asarray([float(v) for v in values if v is not None and not math.isnan(v)], dtype=np.float64)


def _mean_statistic(sample, axis=-1):
    return np.mean(sample, axis=axis)


def _difference_statistic(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def _improvement_statistic(a, b, axis=-1):
    a = np.expand_dims(a, -1)  # (..., n, 1) against (..., 1, m): every pair of seeds
    b = np.expand_dims(b, -2)
    wins = (a > b) + 0.5 * (a == b)
    return np.mean(wins, axis=(-2, -1))


def _interval(samples: tuple[np.ndarray, ...], statistic) -> tuple[float, float, str]:
    """(low, high, method) of scipy's bootstrap; BCa where it is defined, else the percentile interval."""
    from scipy.stats import bootstrap  # scipy loads only when there is a spread to resample

    if all(np.all(s == s[0]) for s in samples):  # every resample is the same: the interval is the value
        value = float(statistic(*samples))
        return value, value, "no spread"
    method = "BCa" if min(len(s) for s in samples) >= 3 else "percentile"
    for attempt in (method, "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's "degenerate" warning: answered by the fallback below
            result = bootstrap(samples, statistic, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                               method=attempt, vectorized=True, rng=np.random.default_rng(RANDOM_STATE))
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return low, high, f"{attempt} bootstrap"
    value = float(statistic(*samples))
    return value, value, "no spread"
