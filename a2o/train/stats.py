"""Statistics over repeated runs: mean +- sample std, t-intervals, paired t-test across seeds.

Conventions (every function documents its own edge cases too):
- std is the sample standard deviation (ddof = 1); intervals are Student-t intervals.
- n = 1: std, interval bounds, t and p are NaN (one run says nothing about spread).
- zero variance (all values, or all paired differences, equal up to 1e-12 relative): std = 0 and
  the interval collapses to (mean, mean). For the paired test, identical runs (mean difference 0)
  give t = 0, p = 1; a constant non-zero difference gives t = +-inf, p = 0.
- n = 0 raises ``ValueError``.

scipy (``pip install 'a2o[detect]'``) provides the t-distribution; it is imported on first use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from a2o.errors import require

__all__ = ["SummaryStats", "PairedTTest", "summarize", "paired_t_test", "format_mean_std", "spearman"]

_ZERO_VARIANCE_RTOL = 1e-12


@dataclass(frozen=True)
class SummaryStats:
    """Mean, sample std and t-interval of one metric over n runs."""

    n: int
    """Number of runs."""
    mean: float
    """Sample mean."""
    std: float
    """Sample standard deviation (ddof=1); NaN when n = 1."""
    ci_low: float
    """Lower bound of the two-sided t-interval of the mean; NaN when n = 1."""
    ci_high: float
    """Upper bound of the two-sided t-interval of the mean; NaN when n = 1."""
    confidence: float
    """Confidence level of the interval (0.95 = 95 %)."""


@dataclass(frozen=True)
class PairedTTest:
    """Two-sided paired t-test of ``a - b`` over matched runs (same seed, same split)."""

    n: int
    """Number of pairs."""
    mean_difference: float
    """Mean of a - b."""
    std_difference: float
    """Sample std (ddof=1) of a - b; NaN when n = 1."""
    ci_low: float
    """Lower bound of the t-interval of the mean difference; NaN when n = 1."""
    ci_high: float
    """Upper bound of the t-interval of the mean difference; NaN when n = 1."""
    t_statistic: float
    """mean / (std / sqrt(n)) with n - 1 degrees of freedom; see the module's edge cases."""
    p_value: float
    """Two-sided p-value; NaN when n = 1."""
    confidence: float
    """Confidence level of the interval."""


def _values(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name}: need at least one value")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: values must be finite, got {array.tolist()}")
    return array


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _mean_std_interval(array: np.ndarray, confidence: float) -> tuple[float, float, float, float, bool]:
    """(mean, std, ci_low, ci_high, zero_variance) of a 1-D sample."""
    mean = float(array.mean())
    if array.size == 1:
        return mean, math.nan, math.nan, math.nan, False
    std = float(array.std(ddof=1))
    if std <= _ZERO_VARIANCE_RTOL * max(1.0, abs(mean)):
        return mean, 0.0, mean, mean, True
    stats = require("scipy.stats", "detect")
    half_width = float(stats.t.ppf(0.5 + confidence / 2.0, df=array.size - 1)) * std / math.sqrt(array.size)
    return mean, std, mean - half_width, mean + half_width, False


def summarize(values: Sequence[float], confidence: float = 0.95) -> SummaryStats:
    """Mean, sample std and two-sided t-interval of ``values`` (one per run)."""
    _check_confidence(confidence)
    array = _values(values, "summarize")
    mean, std, low, high, _ = _mean_std_interval(array, confidence)
    return SummaryStats(int(array.size), mean, std, low, high, confidence)


def paired_t_test(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedTTest:
    """Two-sided paired t-test of ``a`` vs ``b``: ``a[i]`` and ``b[i]`` share seed i.

    Equals ``scipy.stats.ttest_rel(a, b)`` in the regular case; the module docstring lists what
    n = 1 and zero-variance differences return.
    """
    _check_confidence(confidence)
    first, second = _values(a, "paired_t_test a"), _values(b, "paired_t_test b")
    if first.shape != second.shape:
        raise ValueError(f"paired_t_test: {first.size} values in a but {second.size} in b (pair by seed)")
    differences = first - second
    n = int(differences.size)
    mean, std, low, high, zero_variance = _mean_std_interval(differences, confidence)
    if n == 1:
        t_statistic, p_value = math.nan, math.nan
    elif zero_variance:
        if abs(mean) <= _ZERO_VARIANCE_RTOL:
            t_statistic, p_value = 0.0, 1.0
        else:
            t_statistic, p_value = math.copysign(math.inf, mean), 0.0
    else:
        stats = require("scipy.stats", "detect")
        t_statistic = mean / (std / math.sqrt(n))
        p_value = float(2.0 * stats.t.sf(abs(t_statistic), df=n - 1))
    return PairedTTest(n, mean, std, low, high, float(t_statistic), p_value, confidence)


def format_mean_std(summary: SummaryStats, digits: int = 3) -> str:
    """``'0.812 ± 0.013 (n=3)'``; ``'0.812 (n=1)'`` when the std is undefined."""
    if math.isnan(summary.std):
        return f"{summary.mean:.{digits}f} (n={summary.n})"
    return f"{summary.mean:.{digits}f} ± {summary.std:.{digits}f} (n={summary.n})"


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, ties sharing their mean rank."""
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    for value in np.unique(values):
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation of paired values (ties get mean ranks); None below 3 pairs or
    when either side is constant."""
    x, y = _values(a, "a"), _values(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"spearman needs paired values; got {x.size} and {y.size}")
    if x.size < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])
