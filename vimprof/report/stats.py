"""Summary statistics of one phase's durations (ms) for one label.

Mean and its confidence interval: the Student t interval, the one behind the error bars of
Ventre et al. 2016, Fig. 6 ("Error bars in the figures denote the 95% confidence intervals"):

    mean ± t_{1-α/2, n-1} · s / √n

with α = 1 - confidence, s the sample standard deviation (ddof = 1) and t_{1-α/2, n-1} the
1-α/2 quantile of Student's t distribution with n-1 degrees of freedom (scipy.stats.t.ppf).

Quantiles (median, p90, p95, p99) use numpy's default linear interpolation (Hyndman & Fan
type 7, the default of R's quantile() and of pandas). The median and p95 get bootstrap
confidence intervals, bias-corrected and accelerated (BCa, scipy.stats.bootstrap), with a
fixed seed so a report is reproducible.

A bootstrap never sees beyond the sample's extremes, so a quantile's CI from few runs is
optimistic. The distribution-free interval of the q-quantile [X_(r), X_(s)] exists only when
the sample extremes cover it with probability 1 - α, which needs

    n >= ln(α/2) / ln(max(q, 1 - q))     (6 runs for the median, 72 for p95, at 95%)

(`min_n_for_quantile_ci`); below that a warning goes with the CI.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sp

NAN = float("nan")
N_RESAMPLES = 4999
BOOTSTRAP_SEED = 20160607  # fixed: the same runs give the same report


@dataclass(frozen=True)
class PhaseStats:
    """Statistics of one phase over n instances; durations in ms.

    Fields that a sample this small cannot give are NaN (never None, so arithmetic and
    formatting need no special case): with n = 0 every statistic is NaN; with n = 1 mean,
    median, quantiles, min and max are the single value and std and every CI are NaN (a spread
    needs n >= 2); the bootstrap CIs need n >= 3. `note` says why in words ("" when everything
    is defined); `warnings` lists caveats of defined values (a quantile CI from too few runs).
    `failures` counts runs of the label that should have had the phase and do not (see
    compare.LabelData.failures_for).
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
    failures: int = 0
    p90_ms: float = NAN
    p95_ms: float = NAN
    p99_ms: float = NAN
    min_ms: float = NAN
    max_ms: float = NAN
    median_ci_ms: tuple[float, float] = (NAN, NAN)
    p95_ci_ms: tuple[float, float] = (NAN, NAN)
    warnings: tuple[str, ...] = ()

    @property
    def has_ci(self) -> bool:
        """True when the t confidence interval of the mean is defined (n >= 2)."""
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


def min_n_for_quantile_ci(q: float, confidence: float = 0.95) -> int:
    """Smallest n for which a distribution-free `confidence` CI of the q-quantile exists.

    n >= ln(α/2) / ln(max(q, 1-q)), α = 1 - confidence: 6 for the median, 72 for p95 and
    368 for p99 at 95%. `q` in (0, 1); raises ValueError otherwise.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q!r}")
    alpha = 1.0 - confidence
    return math.ceil(math.log(alpha / 2.0) / math.log(max(q, 1.0 - q)) - 1e-9)


def bootstrap_ci(
    samples: Sequence[np.ndarray],
    statistic: Callable[..., np.ndarray],
    confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES,
) -> tuple[tuple[float, float], str]:
    """BCa bootstrap CI of `statistic(*samples, axis=-1)` (scipy.stats.bootstrap), seeded.

    Returns ((low, high), method): method "BCa"; "percentile" when BCa is undefined (a
    statistic that barely moves under resampling) and the percentile interval is not; the
    point value twice with method "degenerate" when every resample gives the same value
    (constant samples); NaNs with method "" when some sample has fewer than 3 values.
    """
    if any(len(s) < 3 for s in samples):
        return (NAN, NAN), ""
    if all(np.all(s == s[0]) for s in samples):
        v = float(statistic(*samples, axis=-1))
        return (v, v), "degenerate"
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = _sp.bootstrap(
                tuple(samples),
                statistic,
                confidence_level=confidence,
                n_resamples=n_resamples,
                method=method,
                vectorized=True,
                rng=BOOTSTRAP_SEED,
            )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return (low, high), method
    return (NAN, NAN), ""


def _median(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(x, axis=axis)


def _p95(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.percentile(x, 95, axis=axis)


def phase_stats(
    durations_ms: Sequence[float],
    phase: str,
    confidence: float = 0.95,
    failures: int = 0,
    n_resamples: int = N_RESAMPLES,
) -> PhaseStats:
    """n, mean, sd, quantiles, extremes and CIs of `durations_ms` (ms) of one phase.

    Mean CI: mean ± t_{1-α/2, n-1} · s / √n, α = 1 - confidence, s with ddof = 1.
    Median and p95 CIs: BCa bootstrap (see bootstrap_ci), `n_resamples` resamples; 0 skips
    them (NaN). n = 0 gives all NaN; n = 1 gives NaN std and CIs (see PhaseStats). Raises
    ValueError for a confidence outside (0, 1) or a non-finite duration (a bug upstream, not
    a user error).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    x = np.asarray(durations_ms, dtype=float).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError(f"phase {phase!r}: durations must be finite numbers")
    n = int(x.size)
    if n == 0:
        return PhaseStats(
            phase, 0, NAN, NAN, NAN, NAN, NAN, confidence, "no instance has it", failures
        )
    mean = float(np.mean(x))
    median = float(np.median(x))
    p90, p95, p99 = (float(v) for v in np.percentile(x, [90, 95, 99]))
    lo, hi = float(np.min(x)), float(np.max(x))
    quant = dict(p90_ms=p90, p95_ms=p95, p99_ms=p99, min_ms=lo, max_ms=hi)
    if n == 1:
        return PhaseStats(
            phase, 1, mean, median, NAN, NAN, NAN, confidence, "n=1: no spread, no CI",
            failures, **quant,
        )
    std = float(np.std(x, ddof=1))
    low, high = t_interval(mean, std, n, confidence)
    note = ""
    median_ci: tuple[float, float] = (NAN, NAN)
    p95_ci: tuple[float, float] = (NAN, NAN)
    warns: list[str] = []
    if n_resamples > 0:
        if n < 3:
            note = f"n={n}: too few runs for bootstrap CIs"
        else:
            median_ci, _ = bootstrap_ci((x,), _median, confidence, n_resamples)
            p95_ci, _ = bootstrap_ci((x,), _p95, confidence, n_resamples)
        for name, q in (("median", 0.5), ("p95", 0.95)):
            need = min_n_for_quantile_ci(q, confidence)
            if n < need:
                warns.append(
                    f"{confidence:.0%} CI of the {name} unreliable below n={need} runs (a "
                    "bootstrap cannot see beyond the sample's extremes)"
                )
    return PhaseStats(
        phase, n, mean, median, std, low, high, confidence, note, failures, **quant,
        median_ci_ms=median_ci, p95_ci_ms=p95_ci, warnings=tuple(warns),
    )
