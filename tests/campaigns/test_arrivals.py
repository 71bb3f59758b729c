"""vimprof.campaigns.arrivals: spec parsing, schedule properties, seeds."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy import stats

from vimprof.campaigns import arrivals
from vimprof.campaigns.arrivals import NS, Burst, Closed, Constant, Poisson, Ramp, parse
from vimprof.errors import VimprofError


@pytest.mark.parametrize("spec, cls, fields", [
    ("sequential", Closed, {"clients": 1}),
    ("closed:4", Closed, {"clients": 4}),
    ("rate:20", Constant, {"rate": 20.0}),
    ("rate:0.5", Constant, {"rate": 0.5}),
    ("poisson:20", Poisson, {"rate": 20.0, "seed": 7}),
    ("burst:10@5s", Burst, {"size": 10, "every_s": 5.0}),
    ("burst:3@0.5", Burst, {"size": 3, "every_s": 0.5}),
    ("rate:1..20/60s", Ramp, {"start": 1.0, "end": 20.0, "ramp_s": 60.0, "poisson": False}),
    ("poisson:1..20/60s", Ramp, {"start": 1.0, "end": 20.0, "ramp_s": 60.0, "poisson": True,
                                 "seed": 7}),
    ("rate:20..0/10", Ramp, {"start": 20.0, "end": 0.0, "ramp_s": 10.0}),
    (" RATE:20 ", Constant, {"rate": 20.0}),
])
def test_good_specs(spec, cls, fields):
    p = parse(spec, seed=7)
    assert type(p) is cls
    for k, v in fields.items():
        assert getattr(p, k) == v
    d = p.describe()
    json.dumps(d)  # the manifest's
    assert parse(d["spec"], seed=7) == p  # describe() names the same process
    assert d["loop"] == ("open" if p.open else "closed")


def test_closed_and_sequential_are_concurrency_limits_not_schedules():
    for spec, clients in (("sequential", 1), ("closed:3", 3)):
        p = parse(spec)
        assert not p.open and p.concurrency == clients and p.max_rate() is None
        with pytest.raises(TypeError):
            next(p.offsets_ns(max_runs=1))
    assert parse("sequential") == arrivals.sequential() == Closed(1)
    assert parse("sequential").describe()["kind"] == "sequential"


@pytest.mark.parametrize("spec, says", [
    ("", "unknown arrival process"),
    ("fast", "unknown arrival process 'fast'"),
    ("sequential:2", "takes no argument"),
    ("closed", "closed:C needs C"),
    ("closed:0", "closed:C needs C"),
    ("closed:2.5", "closed:C needs C"),
    ("rate", "needs a rate"),
    ("rate:", "needs a rate"),
    ("rate:0", "must be > 0"),
    ("rate:-3", "not a rate"),
    ("rate:abc", "not a rate"),
    ("poisson:1e3", "not a rate"),
    ("rate:1..20", "a ramp is rate:R1..R2/Ds"),
    ("rate:1..20/0s", "duration must be > 0"),
    ("poisson:0..0/10s", "sends nothing"),
    ("burst:10", "burst:N@T needs"),
    ("burst:0@5s", "N >= 1"),
    ("burst:10@0s", "must be > 0 s"),
    ("burst:a@5s", "burst:N@T needs"),
])
def test_bad_specs_say_what_is_wrong_with_an_example(spec, says):
    with pytest.raises(VimprofError) as info:
        parse(spec)
    msg = str(info.value)
    assert says in msg
    assert f"--arrival {spec!r}" in msg
    assert "e.g. sequential, closed:4, rate:20" in msg


def test_rate_gaps_are_exactly_one_over_r():
    offs = list(parse("rate:20").offsets_ns(max_runs=1000))
    assert offs[0] == 0
    assert set(np.diff(offs)) == {50_000_000}
    offs = np.array(list(parse("rate:3").offsets_ns(max_runs=3000)))
    assert np.abs(np.diff(offs) - NS / 3).max() <= 1  # ns rounding only, never accumulating
    assert offs[-1] == round(2999 * NS / 3)


def test_bounds_count_and_duration():
    p = parse("rate:10")
    assert len(list(p.offsets_ns(max_runs=7))) == 7
    offs = list(p.offsets_ns(max_duration_s=2.0))
    assert len(offs) == 20 and offs[-1] < 2 * NS
    assert len(list(p.offsets_ns(max_runs=5, max_duration_s=2.0))) == 5
    assert len(list(p.offsets_ns(max_runs=50, max_duration_s=1.0))) == 10
    ramp = parse("rate:1..20/60s")  # ends by itself at 60 s, or earlier by a bound
    offs = list(ramp.offsets_ns())
    assert len(offs) == 630 and offs[-1] < 60 * NS  # (1 + 20) / 2 * 60
    assert len(list(ramp.offsets_ns(max_duration_s=10))) < 630 / 4


def test_poisson_mean_rate_and_exponential_gaps():
    rate, n = 50.0, 20_000
    offs = np.array(list(Poisson(rate, seed=20160601).offsets_ns(max_runs=n)))
    gaps = np.diff(np.concatenate([[0], offs])) / NS
    # mean gap within 4 standard errors of 1/R (an exponential's sd is its mean)
    assert abs(gaps.mean() - 1 / rate) < 4 * (1 / rate) / np.sqrt(n)
    assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > 0.01
    assert not np.any(np.diff(offs) < 0)
    # and not constant gaps: the coefficient of variation of an exponential is 1
    assert 0.95 < gaps.std() / gaps.mean() < 1.05


def test_poisson_seed_reproducible_and_recorded():
    a = list(parse("poisson:20", seed=42).offsets_ns(max_runs=3000))
    b = list(parse("poisson:20", seed=42).offsets_ns(max_runs=3000))
    c = list(parse("poisson:20", seed=43).offsets_ns(max_runs=3000))
    assert a == b and a != c
    # a prefix is a prefix: the sequence depends on the seed only
    assert list(parse("poisson:20", seed=42).offsets_ns(max_runs=10)) == a[:10]
    fresh = parse("poisson:20")  # no seed given: a new one, recorded
    seed = fresh.describe()["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**63
    assert list(Poisson(20.0, seed).offsets_ns(max_runs=50)) == \
        list(fresh.offsets_ns(max_runs=50))
    ramp = parse("poisson:1..20/60s")
    assert list(Ramp(1, 20, 60, poisson=True, seed=ramp.describe()["seed"]).offsets_ns()) == \
        list(ramp.offsets_ns())


def _counts(offs, window_s, total_s):
    return np.histogram(np.asarray(offs) / NS, bins=np.arange(0, total_s + window_s, window_s))[0]


def test_rate_ramp_is_linear_in_rate():
    p = parse("rate:1..20/60s")
    offs = np.array(list(p.offsets_ns()))
    gaps = np.diff(offs) / NS
    assert np.all(np.diff(gaps) <= 1e-9)  # the gaps shrink: the rate increases
    mids = (offs[:-1] + offs[1:]) / 2 / NS
    # each local gap is 1 / r(t) at its middle, to within the rate's change over one gap
    assert np.allclose(1 / gaps, [p.rate_at(t) for t in mids], rtol=0.02, atol=0.05)
    counts = _counts(offs, 10, 60)
    expected = [(p.rate_at(t) + p.rate_at(t + 10)) / 2 * 10 for t in range(0, 60, 10)]
    assert np.all(np.abs(counts - expected) <= 1)
    down = np.array(list(parse("rate:20..1/60s").offsets_ns()))
    assert np.all(np.diff(np.diff(down)) >= -1)  # and a falling ramp's gaps grow


def test_poisson_ramp_is_a_nonhomogeneous_poisson_process():
    p = Ramp(10.0, 100.0, 100.0, poisson=True, seed=11)
    offs = np.array(list(p.offsets_ns()))
    expected_total = (10 + 100) / 2 * 100  # 5500
    assert abs(len(offs) - expected_total) < 4 * np.sqrt(expected_total)
    counts = _counts(offs, 10, 100)
    expected = np.array([(p.rate_at(t) + p.rate_at(t + 10)) / 2 * 10 for t in range(0, 100, 10)])
    # each window's count is Poisson: within 4 sd of its mean; and the trend rises
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected))
    assert np.corrcoef(np.arange(10), counts)[0, 1] > 0.95
    # time-rescaling theorem: the rescaled gaps L(t_k) - L(t_k-1) are Exp(1)
    t = offs / NS
    big_l = p.start * t + (p.end - p.start) / p.ramp_s * t * t / 2
    assert stats.kstest(np.diff(np.concatenate([[0], big_l])), "expon").pvalue > 0.01


def test_burst_groups():
    p = parse("burst:4@2.5s")
    offs = list(p.offsets_ns(max_runs=12))
    groups = [list(g) for _, g in itertools.groupby(offs)]
    assert [len(g) for g in groups] == [4, 4, 4]
    assert [g[0] for g in groups] == [0, round(2.5 * NS), 5 * NS]
    assert p.burst == 4 and p.max_rate() == pytest.approx(1.6)
    assert len(list(p.offsets_ns(max_duration_s=5.0))) == 8  # the burst at 5 s is out
