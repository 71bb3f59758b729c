"""Summary statistics of one phase's durations (ms) for one label.

The confidence interval is the Student t interval of the mean, the one behind the error bars of
Ventre et al. 2016, Fig. 6 ("Error bars in the figures denote the 95% confidence intervals"):

    mean ± t_{1-α/2, n-1} · s / √n

with α = 1 - confidence, s the sample standard deviation (ddof = 1) and t_{1-α/2, n-1} the
1-α/2 quantile of Student's t distribution with n-1 degrees of freedom (scipy.stats.t.ppf).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sp

NAN = float("nan")


@dataclass(frozen=True)
class PhaseStats:
    """Statistics of one phase over n instances; durations in ms.

    Fields that a sample this small cannot give are NaN (never None, so arithmetic and
    formatting need no special case): with n = 0 every statistic is NaN; with n = 1 mean and
    median are the single value and std and the CI bounds are NaN (a spread needs n >= 2).
    `note` says why in words ("" when everything is defined).
    """

    phase: str
    n: int
    mean_ms: float
    median_ms: float
    std_ms: float
    ci_low_ms: float
    ci_high_ms: float
    confidence: float = 0.95
    note: str = ""

    @property
    def has_ci(self) -> bool:
        """True when the confidence interval is defined (n >= 2)."""
        return not (math.isnan(self.ci_low_ms) or math.isnan(self.ci_high_ms))

    @property
    def ci_half_width_ms(self) -> float:
        """t_{1-α/2, n-1} · s / √n, NaN when n < 2."""
        return (self.ci_high_ms - self.ci_low_ms) / 2 if self.has_ci else NAN


def t_interval(mean: float, std: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """(low, high) = mean ∓ t_{1-α/2, n-1} · std / √n with α = 1 - confidence; NaNs if n < 2."""
    if n < 2 or math.isnan(std):
        return NAN, NAN
    alpha = 1.0 - confidence
    half = float(_sp.t.ppf(1.0 - alpha / 2.0, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def phase_stats(durations_ms: Sequence[float], phase: str, confidence: float = 0.95) -> PhaseStats:
    """n, mean, median, sample std and the Student t CI of the mean of `durations_ms`.

    CI: mean ± t_{1-α/2, n-1} · s / √n, α = 1 - confidence, s with ddof = 1.
    n = 0 gives all NaN; n = 1 gives NaN std and CI (see PhaseStats). Raises ValueError for a
    confidence outside (0, 1) or a non-finite duration (a bug upstream, not a user error).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    x = np.asarray(durations_ms, dtype=float).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError(f"phase {phase!r}: durations must be finite numbers")
    n = int(x.size)
    if n == 0:
        return PhaseStats(phase, 0, NAN, NAN, NAN, NAN, NAN, confidence, "no instance has it")
    mean = float(np.mean(x))
    median = float(np.median(x))
    if n == 1:
        return PhaseStats(
            phase, 1, mean, median, NAN, NAN, NAN, confidence, "n=1: no spread, no CI"
        )
    std = float(np.std(x, ddof=1))
    low, high = t_interval(mean, std, n, confidence)
    return PhaseStats(phase, n, mean, median, std, low, high, confidence)
