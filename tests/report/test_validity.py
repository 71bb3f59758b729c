"""Run validity flags (report/validity.py) on the real Nomad load runs (tests/data/load-nomad)
and on copies altered to trip each check."""

import json
import shutil
from pathlib import Path

import pytest

from vimprof.report.compare import compare, load_label
from vimprof.report.export import summary
from vimprof.report.render import markdown
from vimprof.report.validity import (
    CAPTURE_DROPS,
    CLOCK_DISAGREEMENT,
    CPU_SATURATED,
    GENERATOR_LAG,
    STOPPED_EARLY,
    TOO_FEW_RUNS,
    check_comparison,
    not_checked,
    validity,
)
from vimprof.rundir import RunDir

DATA = Path(__file__).parents[1] / "data" / "load-nomad"
RUNS = ("poisson-1", "poisson-4", "tuned-poisson-1", "tuned-poisson-4")


def _codes(flags):
    return [f.code for f in flags]


@pytest.mark.parametrize("name", RUNS)
def test_real_runs(name):
    flags = validity(RunDir(DATA / name))
    codes = _codes(flags)
    # only poisson-4's generator lagged (2 cores busy with TCG guests): p99 29.0 ms
    assert (GENERATOR_LAG in codes) == (name == "poisson-4")
    if name == "poisson-4":
        lag = json.loads((DATA / name / "manifest.json").read_text())["load"]["lag_ms"]
        msg = next(f.message for f in flags if f.code == GENERATOR_LAG)
        assert f"send lag p99 {lag['p99']:.1f} ms > 10 ms" in msg and "29.0 ms" in msg
    # 14 counted runs (16 - 2 warm-up): enough for the median's CI (6), not for p95's (72)
    few = next(f.message for f in flags if f.code == TOO_FEW_RUNS)
    assert "14 runs measured" in few and "the p95 needs n >= 72" in few
    assert "median" not in few
    assert not {CAPTURE_DROPS, CLOCK_DISAGREEMENT, CPU_SATURATED, STOPPED_EARLY} & set(codes)
    assert any("CPU saturation not checked" in n for n in not_checked(RunDir(DATA / name)))


def _copy(tmp_path, name="poisson-1"):
    dst = tmp_path / name
    shutil.copytree(DATA / name, dst)
    return dst


def _edit_manifest(run, fn):
    p = run / "manifest.json"
    m = json.loads(p.read_text())
    fn(m)
    p.write_text(json.dumps(m))


def test_each_check_trips(tmp_path):
    run = _copy(tmp_path)

    def alter(m):
        m["capture_stats"]["dropped_by_kernel"] = 7
        m["load"]["stopped_reason"] = "max-in-flight"
        m["load"]["lag_ms"]["max"] = 150.0
        m["xen"] = {"dom0_clock": [{"run": 0, "offset_ms": 900.0, "uncertainty_ms": 0.5,
                                    "offset_after_ms": 0.2},
                                   {"run": 1, "offset_ms": 12.0, "uncertainty_ms": 0.5}]}

    _edit_manifest(run, alter)
    lines = (run / "timelines.jsonl").read_text().splitlines()
    rec = json.loads(lines[5])
    rec["crosscheck"]["disagreements"] = 2
    lines[5] = json.dumps(rec)
    (run / "timelines.jsonl").write_text("\n".join(lines) + "\n")
    (run / "host-load.jsonl").write_text("".join(
        json.dumps({"t_ns": i, "host": "hostl", "cpu_pct": 99.0, "mem_pct": 40.0}) + "\n"
        for i in range(10)))
    flags = validity(RunDir(run))
    by = {f.code: f.message for f in flags}
    assert set(by) == {GENERATOR_LAG, CAPTURE_DROPS, TOO_FEW_RUNS, CLOCK_DISAGREEMENT,
                       CPU_SATURATED, STOPPED_EARLY}
    assert "a send 150.0 ms late > 100 ms" in by[GENERATOR_LAG]
    assert "7 by the kernel" in by[CAPTURE_DROPS]
    assert "max-in-flight" in by[STOPPED_EARLY] and "16 sends of 16 planned" in by[STOPPED_EARLY]
    assert "p90 of CPU busy 99%" in by[CPU_SATURATED]
    clock = [f.message for f in flags if f.code == CLOCK_DISAGREEMENT]
    assert any("1 of 14 instances" in m for m in clock)
    # run 0 was stepped back to 0.2 ms: fine; run 1 stayed 12 ms off > 3 ms + 2 x 0.5
    assert any("+12.0 ms" in m for m in clock)
    assert not any("CPU saturation" in n for n in not_checked(RunDir(run)))


def test_compare_carries_the_flags(tmp_path):
    cmp = compare([RunDir(DATA / "poisson-1"), RunDir(DATA / "poisson-4")], n_resamples=0)
    assert cmp.validity == {}  # compare() alone checks nothing; write_report does
    check_comparison(cmp)
    doc = summary(cmp)
    labels = {d["label"]: d for d in doc["labels"]}
    assert [f["code"] for f in labels["poisson-4"]["validity"]] == [GENERATOR_LAG, TOO_FEW_RUNS]
    assert [f["code"] for f in labels["poisson-1"]["validity"]] == [TOO_FEW_RUNS]
    md = markdown(cmp)
    assert "poisson-4: validity flag generator-lag: the load generator lagged" in md


def test_compare_output_unchanged_without_flags(make_run):
    # 80 synthetic runs without load summary, capture stats or crosscheck: no flag at all
    cmp = compare([make_run("a", n=80, seed=1), make_run("b", n=80, seed=2)], n_resamples=0)
    check_comparison(cmp)
    assert cmp.validity == {"a": [], "b": []}
    assert all("validity" not in d for d in summary(cmp)["labels"])
    assert "validity flag" not in markdown(cmp)


def test_write_report_carries_the_flags(tmp_path):
    from rich.console import Console

    from vimprof.report import write_report

    console = Console(width=100, record=True)
    write_report([RunDir(DATA / "poisson-1"), RunDir(DATA / "poisson-4")], tmp_path, console,
                 n_resamples=0)
    text = " ".join(console.export_text().split())  # (rich wraps at 100 columns)
    assert "poisson-4: validity flag generator-lag: the load generator lagged its schedule: " \
        "send lag p99 29.0 ms" in text
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert [f["code"] for f in doc["labels"][1]["validity"]] == [GENERATOR_LAG, TOO_FEW_RUNS]
    assert "validity flag generator-lag" in (tmp_path / "report.html").read_text()
    assert "validity flag generator-lag" in (tmp_path / "report.md").read_text()


def test_label_data_and_run_agree():
    d = load_label(RunDir(DATA / "poisson-4"))
    assert validity(d) == validity(RunDir(DATA / "poisson-4"))
