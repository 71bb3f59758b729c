import json
import math
import statistics

import pytest

from vimprof.errors import VimprofError
from vimprof.phases import MODELS, PhaseModel
from vimprof.report.compare import compare, load_label
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
