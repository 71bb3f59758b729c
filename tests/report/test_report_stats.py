import math

import numpy as np
import pytest
from scipy import stats as sps

from vimprof.report.stats import (
    bootstrap_ci,
    min_n_for_quantile_ci,
    phase_stats,
    t_interval,
)

SAMPLE = [312.0, 298.5, 305.2, 321.9, 290.3, 301.1, 315.7, 299.8, 308.4, 296.6]


def _median(x, axis=-1):
    return np.median(x, axis=axis)


def test_matches_hand_computation():
    n = len(SAMPLE)
    mean = sum(SAMPLE) / n
    s = math.sqrt(sum((x - mean) ** 2 for x in SAMPLE) / (n - 1))
    t975_9 = 2.2621571628  # t_{0.975, 9} from printed tables, not from scipy
    half = t975_9 * s / math.sqrt(n)
    st = phase_stats(SAMPLE, "total")
    assert st.phase == "total" and st.n == 10
    assert st.mean_ms == pytest.approx(mean, rel=1e-12)
    assert st.median_ms == pytest.approx((301.1 + 305.2) / 2)
    assert st.std_ms == pytest.approx(s, rel=1e-12)
    assert st.ci_low_ms == pytest.approx(mean - half, rel=1e-9)
    assert st.ci_high_ms == pytest.approx(mean + half, rel=1e-9)
    assert st.ci_half_width_ms == pytest.approx(half, rel=1e-9)
    assert st.min_ms == 290.3 and st.max_ms == 321.9
    assert st.has_ci and st.note == ""


def test_quantiles_are_type_7():
    # Hyndman & Fan type 7 (R's default): h = (n-1)p, x[floor h] + frac(h)·(x[ceil h] - x[floor h])
    st = phase_stats([float(v) for v in range(1, 11)], "p")  # 1..10
    assert st.median_ms == 5.5
    assert st.p90_ms == pytest.approx(9.1)
    assert st.p95_ms == pytest.approx(9.55)
    assert st.p99_ms == pytest.approx(9.91)


def test_other_confidence_uses_its_quantile():
    n = len(SAMPLE)
    s = float(np.std(SAMPLE, ddof=1))
    st90 = phase_stats(SAMPLE, "p", confidence=0.90)
    st99 = phase_stats(SAMPLE, "p", confidence=0.99)
    assert st90.ci_half_width_ms == pytest.approx(sps.t.ppf(0.95, n - 1) * s / math.sqrt(n))
    assert st99.ci_half_width_ms == pytest.approx(3.2498355 * s / math.sqrt(n), rel=1e-6)
    assert st90.ci_half_width_ms < phase_stats(SAMPLE, "p").ci_half_width_ms
    assert st90.confidence == 0.90
    assert st90.median_ci_ms[1] - st90.median_ci_ms[0] < st99.median_ci_ms[1] - st99.median_ci_ms[0]


def _t_coverage(samples: np.ndarray, true_mean: float) -> float:
    covered = 0
    for x in samples:
        lo, hi = t_interval(float(x.mean()), float(x.std(ddof=1)), x.size)
        covered += lo <= true_mean <= hi
    return covered / len(samples)


def test_t_ci_coverage_normal():
    rng = np.random.default_rng(20160607)
    true_mean, sd, n, trials = 250.0, 40.0, 20, 2000
    covered = 0
    for _ in range(trials):  # through phase_stats itself, without the bootstrap (fast)
        st = phase_stats(rng.normal(true_mean, sd, size=n), "spawn", n_resamples=0)
        covered += st.ci_low_ms <= true_mean <= st.ci_high_ms
    # binomial SE at 2000 trials is 0.49%: ±2 points is > 4 SE
    assert 0.93 <= covered / trials <= 0.97


def test_t_ci_coverage_lognormal():
    # Latencies are right-skewed: log-normal(μ=5, σ=0.25), n=30; the t interval is robust
    # enough there to stay near 95% (it undercovers for heavier skew, see the σ=0.5 case).
    rng = np.random.default_rng(7)
    mu, sigma, n = 5.0, 0.25, 30
    true_mean = math.exp(mu + sigma**2 / 2)
    cov = _t_coverage(rng.lognormal(mu, sigma, size=(2000, n)), true_mean)
    assert 0.93 <= cov <= 0.97
    heavy = _t_coverage(rng.lognormal(mu, 0.5, size=(2000, 20)), math.exp(mu + 0.125))
    assert 0.90 <= heavy < cov  # known undercoverage under skew: the test can see it


@pytest.mark.parametrize("dist", ["normal", "lognormal"])
def test_bca_median_ci_coverage(dist):
    rng = np.random.default_rng(12345)
    trials, n = 120, 30
    covered = 0
    for _ in range(trials):
        if dist == "normal":
            x, true_median = rng.normal(250.0, 40.0, n), 250.0
        else:
            x, true_median = rng.lognormal(5.0, 0.5, n), math.exp(5.0)
        (lo, hi), method = bootstrap_ci((x,), _median, 0.95, n_resamples=999)
        assert method == "BCa"
        covered += lo <= true_median <= hi
    # 120 trials: binomial SE 2%; a 85% or a 99.9% procedure would fall outside
    assert 0.88 <= covered / trials <= 0.995


def test_bootstrap_ci_is_reproducible_and_brackets_the_estimate():
    x = np.array(SAMPLE)
    a = phase_stats(SAMPLE, "p")
    b = phase_stats(SAMPLE, "p")
    assert a.median_ci_ms == b.median_ci_ms and a.p95_ci_ms == b.p95_ci_ms  # fixed seed
    assert a.median_ci_ms[0] <= np.median(x) <= a.median_ci_ms[1]
    assert a.p95_ci_ms[0] <= np.percentile(x, 95) <= a.p95_ci_ms[1]
    assert a.p95_ci_ms[1] <= x.max() + 1e-9  # a bootstrap never sees beyond the sample


def test_min_n_for_quantile_ci():
    for q, expected in ((0.5, 6), (0.95, 72), (0.99, 368), (0.05, 72)):
        n = min_n_for_quantile_ci(q)
        assert n == expected
        # the definition: the sample max covers the q-quantile w.p. 1 - q^n >= 1 - α/2
        p = max(q, 1 - q)
        assert 1 - p**n >= 0.975 > 1 - p ** (n - 1)
    with pytest.raises(ValueError):
        min_n_for_quantile_ci(1.0)


def test_small_n_warns_for_quantile_cis():
    rng = np.random.default_rng(3)
    st20 = phase_stats(rng.normal(100, 10, 20), "p")
    (warning,) = st20.warnings
    assert "p95" in warning and "below n=72" in warning
    st5 = phase_stats(rng.normal(100, 10, 5), "p")
    assert any("median" in w and "below n=6" in w for w in st5.warnings)
    assert phase_stats(rng.normal(100, 10, 72), "p").warnings == ()


def test_single_value_has_no_spread_and_no_ci():
    st = phase_stats([42.5], "scheduling")
    assert st.n == 1 and st.mean_ms == 42.5 and st.median_ms == 42.5
    assert st.p95_ms == 42.5 and st.min_ms == st.max_ms == 42.5
    assert math.isnan(st.std_ms) and math.isnan(st.ci_low_ms) and math.isnan(st.ci_high_ms)
    assert all(math.isnan(v) for v in (*st.median_ci_ms, *st.p95_ci_ms))
    assert not st.has_ci and math.isnan(st.ci_half_width_ms)
    assert "n=1" in st.note


def test_two_values_have_a_t_ci_but_no_bootstrap():
    st = phase_stats([10.0, 12.0], "p")
    assert st.has_ci and math.isnan(st.median_ci_ms[0])
    assert "bootstrap" in st.note


def test_empty_sample():
    st = phase_stats([], "clean", failures=3)
    assert st.n == 0 and not st.has_ci and st.failures == 3
    assert all(math.isnan(v) for v in (st.mean_ms, st.median_ms, st.std_ms, st.p95_ms))
    assert st.note


def test_constant_sample_has_zero_width_cis():
    st = phase_stats([10.0, 10.0, 10.0], "p")
    assert st.std_ms == 0.0 and st.ci_low_ms == st.ci_high_ms == 10.0
    assert st.median_ci_ms == (10.0, 10.0) and st.p95_ci_ms == (10.0, 10.0)


def test_bootstrap_ci_needs_three_values():
    (lo, hi), method = bootstrap_ci((np.array([1.0, 2.0]),), _median)
    assert math.isnan(lo) and math.isnan(hi) and method == ""


@pytest.mark.parametrize("conf", [0.0, 1.0, 95])
def test_bad_confidence(conf):
    with pytest.raises(ValueError, match="confidence"):
        phase_stats(SAMPLE, "p", confidence=conf)


def test_non_finite_duration_is_rejected():
    with pytest.raises(ValueError, match="finite"):
        phase_stats([1.0, float("nan")], "p")
