import json
import math
import statistics

import numpy as np
import pytest
from scipy import stats as sps

from vimprof.errors import VimprofError
from vimprof.phases import MODELS, PhaseModel
from vimprof.report.compare import (
    FASTER,
    FLOOR_PHASE,
    SAME,
    SLOWER,
    Gate,
    compare,
    diff,
    gate_failures,
    load_label,
    min_attainable_p,
)
from vimprof.rundir import RunDir


def _ms_from_file(run: RunDir, phase: str) -> list[float]:
    out = []
    for line in (run.path / "timelines.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if phase in rec["phases"]:
            out.append(rec["phases"][phase]["ms"])
    return out


def test_load_label_reads_phases_counts_and_failures(make_run, make_timeline):
    records = [
        make_timeline(i, {"scheduling": 40.0 + i, "instantiation": 200.0 + 2 * i}) for i in range(5)
    ]
    records.append(make_timeline(5, {"scheduling": 55.0}, complete=False))
    requests = [{"i": i, "ok": i != 2} for i in range(7)]
    run = make_run("stock", records=records, requests=requests)
    data = load_label(run)
    assert data.label == "stock" and data.vim == "nomad"
    assert data.instances == 6 and data.incomplete == 1
    assert data.requests == 7 and data.failures == 1
    assert data.durations_ms["scheduling"] == pytest.approx([40, 41, 42, 43, 44, 55])
    assert data.durations_ms["instantiation"] == pytest.approx([200, 202, 204, 206, 208])
    # total derived from the stack phases for the 5 complete instances only
    assert data.derived_total == 5
    assert data.durations_ms["total"] == pytest.approx([240, 243, 246, 249, 252])


def test_recorded_total_is_used_as_is(make_run, make_timeline):
    rec = make_timeline(0, {"scheduling": 40.0, "instantiation": 200.0})
    rec["phases"]["total"] = {"start_ns": 0, "end_ns": 300 * 10**6, "ms": 300.0}
    data = load_label(make_run("stock", records=[rec]))
    assert data.durations_ms["total"] == [300.0] and data.derived_total == 0


@pytest.mark.parametrize("content", [None, "", "\n", '{"vim": "nom'])
def test_missing_or_empty_timelines(tmp_path, content):
    d = tmp_path / "stock"
    d.mkdir()
    if content is not None:
        (d / "timelines.jsonl").write_text(content)
    with pytest.raises(VimprofError) as exc:
        load_label(RunDir(d))
    assert str(exc.value) == f"{d} has no timelines.jsonl: run `vimprof analyze {d}` first"


def test_compare_missing_timelines_names_the_run(make_run, tmp_path):
    ok = make_run("stock")
    bare = tmp_path / "runs" / "tuned"
    bare.mkdir()
    with pytest.raises(VimprofError, match=r"tuned has no timelines.jsonl: run `vimprof analyze"):
        compare([ok, RunDir(bare)])


def test_unknown_vim(make_run):
    with pytest.raises(VimprofError, match="unknown VIM 'kubevirt'"):
        load_label(make_run("x", vim="kubevirt", n=3))


def test_mixed_vims_in_one_run(make_run, make_timeline):
    recs = [
        make_timeline(0, {"scheduling": 1.0}),
        make_timeline(1, {"scheduling": 1.0}, vim="nova"),
    ]
    with pytest.raises(VimprofError, match="mixes VIMs"):
        load_label(make_run("x", records=recs))


def test_labels_of_different_vims(make_run, monkeypatch):
    monkeypatch.setitem(MODELS, "nova", PhaseModel("nova", ("api", "compute"), "total"))
    a = make_run("nomad-stock")
    b = make_run("nova-stock", vim="nova", means={"api": 100.0, "compute": 900.0})
    assert load_label(b).vim == "nova"
    with pytest.raises(VimprofError, match="different VIMs.*nomad-stock=nomad.*nova-stock=nova"):
        compare([a, b])


def test_duplicate_labels(make_run, tmp_path):
    a = make_run("stock")
    other = tmp_path / "elsewhere" / "stock"
    other.mkdir(parents=True)
    (other / "timelines.jsonl").write_bytes((a.path / "timelines.jsonl").read_bytes())
    with pytest.raises(VimprofError, match="share the label 'stock'"):
        compare([a, RunDir(other)])


def test_no_runs():
    with pytest.raises(VimprofError):
        compare([])


def test_compare_statistics_and_ratios(make_run):
    stock = make_run("stock", n=40, seed=1, means={"scheduling": 50.0, "instantiation": 280.0})
    tuned = make_run(
        "tuned",
        n=35,
        seed=2,
        means={"scheduling": 50.0, "instantiation": 200.0, "download_artifact": 10.0},
    )
    cmp = compare([stock, tuned])
    assert cmp.baseline.label == "stock" and cmp.label_names == ["stock", "tuned"]
    assert cmp.phases == ["scheduling", "instantiation", "download_artifact", "total"]
    assert len(cmp.rows) == 2 * 4
    for phase in ("scheduling", "instantiation"):
        s_med = statistics.median(_ms_from_file(stock, phase))
        t_vals = _ms_from_file(tuned, phase)
        st = cmp.stats(phase, "tuned")
        assert st.n == 35
        assert st.mean_ms == pytest.approx(statistics.fmean(t_vals))
        assert st.std_ms == pytest.approx(statistics.stdev(t_vals))
        assert cmp.row(phase, "stock").ratio == pytest.approx(1.0)
        assert cmp.row(phase, "tuned").ratio == pytest.approx(statistics.median(t_vals) / s_med)
    assert cmp.row("instantiation", "tuned").ratio < 0.8
    # a phase the baseline lacks: n=0 there, no ratio for anyone
    assert cmp.stats("download_artifact", "stock").n == 0
    assert cmp.stats("download_artifact", "tuned").n == 35
    assert math.isnan(cmp.row("download_artifact", "tuned").ratio)
    with pytest.raises(KeyError):
        cmp.row("spawn", "stock")


# --- warm-up, floor, failures -------------------------------------------------------------


def test_warmup_runs_declared_in_the_manifest_are_excluded(make_run, make_timeline):
    records = [make_timeline(i, {"scheduling": 100.0 if i < 2 else 10.0 + i}) for i in range(8)]
    requests = [{"run": i, "ok": i != 0} for i in range(8)]  # the failed one is warm-up
    run = make_run(
        "stock", records=records, requests=requests, manifest={"campaign": {"warmup_runs": 2}}
    )
    data = load_label(run)
    assert data.warmup_runs == 2 and data.warmup_excluded == 2
    assert data.instances == 6 and len(data.all_instances) == 8
    assert [i.warmup for i in data.all_instances] == [True, True] + [False] * 6
    assert data.durations_ms["scheduling"] == pytest.approx([12, 13, 14, 15, 16, 17])
    assert data.requests == 6 and data.failures == 0
    assert "warm-up runs 0..1 excluded" in data.warmup_text
    assert "campaign.warmup_runs = 2" in data.warmup_text
    st = compare([run], n_resamples=0).stats("scheduling", "stock")
    assert st.n == 6 and st.max_ms == pytest.approx(17.0)


def test_no_warmup_rule_counts_every_run_and_says_so(make_run):
    data = load_label(make_run("stock", n=5, manifest={"campaign": {"runs": 5}}))
    assert data.warmup_runs == 0 and data.instances == 5
    assert "no warm-up declared" in data.warmup_text and "every run counted" in data.warmup_text


@pytest.mark.parametrize("bad", [-1, "2", 1.5, True])
def test_bad_warmup_rule(make_run, bad):
    run = make_run("stock", n=3, manifest={"campaign": {"warmup_runs": bad}})
    with pytest.raises(VimprofError, match="warmup_runs must be a non-negative integer"):
        load_label(run)


def test_floor_hooks_become_a_floor_spawn_row(make_run, make_floor_hook):
    hooks = [make_floor_hook(i, 60.0 + i) for i in range(6)]
    hooks.append({"alloc_id": "x", "hook": "spawn", "t_ns": 1, "end_ns": 2})  # analyzer's
    hooks.append({"probe": "floor", "hook": "boot", "t_ns": 1, "end_ns": 2})  # other hook
    run = make_run("stock", n=6, hooks=hooks, manifest={"campaign": {"warmup_runs": 1}})
    cmp = compare([run, make_run("tuned", n=6)], n_resamples=0)
    assert FLOOR_PHASE in cmp.phases and cmp.phases[-1] == "total"
    st = cmp.stats(FLOOR_PHASE, "stock")
    assert st.n == 5 and st.mean_ms == pytest.approx(63.0)  # run 0 is warm-up
    assert cmp.stats(FLOOR_PHASE, "tuned").n == 0
    assert cmp.has_floor and FLOOR_PHASE in cmp.chart_phases()


def test_failures_per_phase(make_run, make_timeline):
    records = [make_timeline(i, {"scheduling": 10.0, "instantiation": 100.0}) for i in range(4)]
    records.append(make_timeline(4, {"scheduling": 10.0}, complete=False))
    records.append(make_timeline(5, {"scheduling": 10.0}, complete=False))
    requests = [{"run": i, "ok": i != 5} for i in range(6)] + [{"run": 6, "ok": False}]
    cmp = compare([make_run("stock", records=records, requests=requests)], n_resamples=0)
    # runs 5 and 6 failed; run 4 is incomplete without instantiation
    assert cmp.stats("scheduling", "stock").failures == 2
    assert cmp.stats("instantiation", "stock").failures == 3


# --- verdicts ----------------------------------------------------------------------------


def _samples(seed, n, median, rel_sd=0.05):
    rng = np.random.default_rng(seed)
    return list(rng.normal(median, median * rel_sd, n))


@pytest.mark.parametrize(
    ("shift", "expected"), [(1.20, SLOWER), (0.80, FASTER), (1.0, SAME)]
)
def test_verdict_on_a_known_shift(shift, expected):
    base = _samples(1, 30, 200.0)
    other = _samples(2, 30, 200.0 * shift)
    d = diff(base, other, "stock")
    assert d.verdict == expected
    assert d.ratio == pytest.approx(np.median(other) / np.median(base))
    assert d.delta_ms == pytest.approx(np.median(other) - np.median(base))
    assert d.ratio_ci[0] <= d.ratio <= d.ratio_ci[1]
    assert d.delta_ci_ms[0] <= d.delta_ms <= d.delta_ci_ms[1]
    if expected != SAME:
        assert d.p_value < 1e-6
        assert d.ratio_ci[0] < shift < d.ratio_ci[1]  # the CI holds the true ratio
    assert d.p_value == pytest.approx(
        sps.mannwhitneyu(other, base, alternative="two-sided", method=d.method).pvalue, rel=1e-9
    )


def test_significant_but_small_effect_is_not_a_verdict():
    base = _samples(3, 400, 200.0, rel_sd=0.01)
    other = _samples(4, 400, 204.0, rel_sd=0.01)  # +2%: very significant with n=400
    d = diff(base, other, "stock", n_resamples=0)
    assert d.p_value < 1e-10 and d.verdict == SAME
    assert "minimum effect" in d.note
    assert diff(base, other, "stock", min_effect=0.01, n_resamples=0).verdict == SLOWER


def test_a_microsecond_move_of_a_tiny_phase_is_not_a_verdict():
    """A 0.1 ms phase halving is significant and -50%, but 0.05 ms < the 1 ms minimum."""
    base = _samples(5, 30, 0.10)
    other = _samples(6, 30, 0.05)
    d = diff(base, other, "stock", n_resamples=0)
    assert d.p_value < 1e-6 and d.verdict == SAME
    assert "ms minimum effect" in d.note
    assert diff(base, other, "stock", n_resamples=0, min_effect_ms=0.01).verdict == FASTER
    # a large phase moving by more than both minima still earns its verdict
    assert diff(_samples(7, 30, 200.0), _samples(8, 30, 150.0), "stock",
                n_resamples=0).verdict == FASTER


def test_false_positive_rate_under_the_null_is_alpha():
    rng = np.random.default_rng(99)
    trials = 400
    hits = sum(
        diff(rng.lognormal(5, 0.3, 20), rng.lognormal(5, 0.3, 20), "b", min_effect=0.0,
             n_resamples=0).verdict != SAME
        for _ in range(trials)
    )
    assert 0.02 <= hits / trials <= 0.085  # alpha = 0.05, binomial SE 1.1%


def test_too_few_runs_cannot_be_significant():
    d = diff([100.0, 101.0, 102.0], [200.0, 201.0, 202.0], "b", n_resamples=0)
    assert d.method == "exact" and d.p_value == pytest.approx(0.1)
    assert d.verdict == SAME and "smallest possible p is 0.1" in d.note
    assert min_attainable_p(3, 3) == pytest.approx(0.1)
    assert min_attainable_p(5, 5) == pytest.approx(2 / 252)
    one = diff([100.0], [200.0, 201.0], "b")
    assert math.isnan(one.p_value) and one.verdict == SAME and "too few" in one.note


def test_ties_use_the_asymptotic_test():
    d = diff([1.0, 1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 6.0, 7.0, 8.0], "b", n_resamples=0)
    assert d.method == "asymptotic"


def test_compare_attaches_diffs_to_non_baseline_rows(make_run):
    a = make_run("stock", n=25, seed=1, means={"scheduling": 50.0, "instantiation": 280.0})
    b = make_run("tuned", n=25, seed=2, means={"scheduling": 50.0, "instantiation": 200.0})
    c = make_run("worse", n=25, seed=3, means={"scheduling": 50.0, "instantiation": 340.0})
    cmp = compare([a, b, c], n_resamples=0)
    assert cmp.row("instantiation", "stock").diff is None
    assert cmp.row("instantiation", "tuned").diff.verdict == FASTER
    assert cmp.row("instantiation", "worse").diff.verdict == SLOWER
    assert cmp.row("scheduling", "tuned").diff.verdict == SAME
    assert cmp.row("total", "worse").diff.base_label == "stock"
    assert "Mann-Whitney U" in cmp.method_text and "5%" in cmp.method_text


@pytest.mark.parametrize(("alpha", "effect"), [(0.0, 0.05), (1.0, 0.05), (0.05, -0.1)])
def test_compare_option_ranges(make_run, alpha, effect):
    with pytest.raises(VimprofError):
        compare([make_run("stock", n=3)], alpha=alpha, min_effect=effect)


# --- the CI gate -------------------------------------------------------------------------


def test_gate_parse():
    assert Gate.parse("instantiation:10") == Gate("instantiation", 10.0)
    assert Gate.parse("floor spawn:2.5") == Gate("floor spawn", 2.5)
    for bad in ("total", "total:", ":5", "total:x", "total:-3"):
        with pytest.raises(VimprofError, match="expected PHASE:PCT"):
            Gate.parse(bad)


def test_gate_failures(make_run):
    a = make_run("stock", n=25, seed=1, means={"scheduling": 50.0, "instantiation": 200.0})
    b = make_run("tuned", n=25, seed=2, means={"scheduling": 40.0, "instantiation": 240.0})
    cmp = compare([a, b], n_resamples=0)
    change = cmp.row("instantiation", "tuned").diff.change_pct
    assert 15 < change < 25
    msgs = gate_failures(cmp, [Gate("instantiation", 10.0)])
    assert len(msgs) == 1 and msgs[0].startswith("instantiation: tuned is slower than stock")
    assert f"{change:+.1f}%" in msgs[0] and "Mann-Whitney U" in msgs[0]
    assert gate_failures(cmp, [Gate("instantiation", 30.0)]) == []  # slower, within limit
    assert gate_failures(cmp, [Gate("scheduling", 0.0)]) == []  # faster never fails
    with pytest.raises(VimprofError, match="no phase 'spawn'"):
        gate_failures(cmp, [Gate("spawn", 5.0)])


def test_overlapping_breakdown_phases_are_flagged(make_run, make_timeline):
    from vimprof.report.render import overlap_notes

    seq = make_timeline(0, {"download_artifact": 50.0, "spawn": 100.0, "clean": 2.0})
    nested = make_timeline(1, {"download_artifact": 50.0, "spawn": 100.0, "clean": 2.0})
    p = nested["phases"]
    p["download_artifact"]["end_ns"] = p["clean"]["end_ns"]  # encloses spawn and clean
    touching = make_timeline(2, {"download_artifact": 50.0, "spawn": 100.0})
    touching["phases"]["spawn"]["start_ns"] -= 5_000  # 5 µs: clock noise, no overlap
    run = make_run("stock", records=[seq, nested, touching],
                   manifest={"campaign": {"warmup_runs": 1}})
    d = load_label(run)
    assert d.breakdown_overlaps == {("download_artifact", "spawn"): 1,
                                    ("download_artifact", "clean"): 1}
    cmp = compare([run], n_resamples=0)
    (note,) = overlap_notes(cmp)
    assert "download_artifact and spawn in 1/2 instances" in note
    assert "warm-up run 0 excluded" in d.warmup_text
    assert cmp.warmup_note == "warm-up excluded: stock run 0"
