import math

import numpy as np
import pytest
from scipy import stats as sps

from vimprof.report.stats import phase_stats

SAMPLE = [312.0, 298.5, 305.2, 321.9, 290.3, 301.1, 315.7, 299.8, 308.4, 296.6]


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
    assert st.has_ci and st.note == ""


def test_other_confidence_uses_its_quantile():
    n = len(SAMPLE)
    s = float(np.std(SAMPLE, ddof=1))
    st90 = phase_stats(SAMPLE, "p", confidence=0.90)
    st99 = phase_stats(SAMPLE, "p", confidence=0.99)
    assert st90.ci_half_width_ms == pytest.approx(sps.t.ppf(0.95, n - 1) * s / math.sqrt(n))
    assert st99.ci_half_width_ms == pytest.approx(3.2498355 * s / math.sqrt(n), rel=1e-6)
    assert st90.ci_half_width_ms < phase_stats(SAMPLE, "p").ci_half_width_ms
    assert st90.confidence == 0.90


def test_coverage_of_95_percent_ci():
    rng = np.random.default_rng(20160607)
    true_mean, sd, n, trials = 250.0, 40.0, 20, 4000
    covered = 0
    for _ in range(trials):
        st = phase_stats(rng.normal(true_mean, sd, size=n), "spawn")
        covered += st.ci_low_ms <= true_mean <= st.ci_high_ms
    assert 0.93 <= covered / trials <= 0.97


def test_single_value_has_no_spread_and_no_ci():
    st = phase_stats([42.5], "scheduling")
    assert st.n == 1 and st.mean_ms == 42.5 and st.median_ms == 42.5
    assert math.isnan(st.std_ms) and math.isnan(st.ci_low_ms) and math.isnan(st.ci_high_ms)
    assert not st.has_ci and math.isnan(st.ci_half_width_ms)
    assert "n=1" in st.note


def test_empty_sample():
    st = phase_stats([], "clean")
    assert st.n == 0 and not st.has_ci
    assert all(math.isnan(v) for v in (st.mean_ms, st.median_ms, st.std_ms))
    assert st.note


def test_constant_sample_has_zero_width_ci():
    st = phase_stats([10.0, 10.0, 10.0], "p")
    assert st.std_ms == 0.0 and st.ci_low_ms == st.ci_high_ms == 10.0


@pytest.mark.parametrize("conf", [0.0, 1.0, 95])
def test_bad_confidence(conf):
    with pytest.raises(ValueError, match="confidence"):
        phase_stats(SAMPLE, "p", confidence=conf)


def test_non_finite_duration_is_rejected():
    with pytest.raises(ValueError, match="finite"):
        phase_stats([1.0, float("nan")], "p")
