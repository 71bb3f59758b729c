"""Load curves (report/load.py, `vimprof curves`) on the real Nomad load runs of
tests/data/load-nomad: stock Nomad (qemu driver) and the reactive Nomad with the tuned driver,
each at poisson:1 and poisson:4 (16 runs, 2 warm-up, seed 11)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from vimprof.cli import cli
from vimprof.report import load as L
from vimprof.report.validity import GENERATOR_LAG, TOO_FEW_RUNS
from vimprof.rundir import RunDir

DATA = Path(__file__).parents[1] / "data" / "load-nomad"
STOCK = ("poisson-1", "poisson-4")
TUNED = ("tuned-poisson-1", "tuned-poisson-4")


@pytest.fixture(scope="module")
def report():
    return L.load_levels({"stock": [RunDir(DATA / n) for n in STOCK],
                          "tuned": [RunDir(DATA / n) for n in TUNED]})


def _jsonl(name, file):
    return [json.loads(x) for x in (DATA / name / file).read_text().splitlines() if x.strip()]


def _manifest(name):
    return json.loads((DATA / name / "manifest.json").read_text())


def _counted_totals(name):
    return np.array([r["phases"]["total"]["ms"] for r in _jsonl(name, "timelines.jsonl")
                     if r["run"] >= _manifest(name)["campaign"]["warmup_runs"]])


def test_throughput_from_requests(report):
    for v in report.variants:
        for lv in v.levels:
            reqs = _jsonl(lv.label, "requests.jsonl")
            running = sorted(r["t_running_ns"] for r in reqs if r["ok"])
            first = min(r["t_submit_ns"] for r in reqs)
            assert lv.ready == len(running) == 16
            assert lv.throughput_rps == pytest.approx(16 / ((running[-1] - first) / 1e9))
    # by hand: 16 instances over 12.36 s (poisson-1) and 3.32 s (poisson-4)
    st = report.variant("stock")
    assert [round(lv.throughput_rps, 2) for lv in st.levels] == [1.29, 4.81]


def test_levels_ordered_with_engine_rates(report):
    for v, names in zip(report.variants, (STOCK, TUNED), strict=True):
        assert [lv.label for lv in v.levels] == list(names)
        for lv in v.levels:
            load = _manifest(lv.label)["load"]
            assert lv.offered_rps == load["offered_rate_rps"]
            assert lv.achieved_rps == load["achieved_rate_rps"]
            assert lv.peak_in_flight == load["peak_in_flight"]
            assert lv.lag_p99_ms == load["lag_ms"]["p99"]
            tot = lv.stats["total"]
            x = _counted_totals(lv.label)
            assert tot.n == x.size == 14
            assert tot.median_ms == pytest.approx(np.median(x))
            assert tot.p95_ms == pytest.approx(np.percentile(x, 95))
            assert tot.p95_ci_ms[0] <= tot.p95_ci_ms[1]


def test_knee_by_hand(report):
    # stock: both levels keep up (achieved = offered to 0.01%; throughput 1.29 >= 0.95 x 1.25
    # and 4.81 >= 0.95 x 5.00); p95 911.0 ms at 5 req/s is 1% below 921.9 ms at 1.25 req/s:
    # stable. Every level qualifies: knee at the highest level, no bend seen.
    st = report.variant("stock")
    p1, p4 = (_counted_totals(n) for n in STOCK)
    assert np.percentile(p4, 95) / np.percentile(p1, 95) - 1 < L.P95_RISE
    assert st.knee is st.levels[1] and st.knee.label == "poisson-4" and not st.bent
    # tuned: p95 rises 218.7 -> 304.4 ms (+39% > 10%) and the BCa CIs are apart
    tu = report.variant("tuned")
    t1, t4 = (_counted_totals(n) for n in TUNED)
    assert np.percentile(t4, 95) / np.percentile(t1, 95) - 1 > 0.35
    lo4 = tu.levels[1].stats["total"].p95_ci_ms[0]
    hi1 = tu.levels[0].stats["total"].p95_ci_ms[1]
    assert lo4 > hi1
    assert tu.levels[1].keeps_up and not tu.levels[1].p95_stable
    assert tu.knee is tu.levels[0] and tu.knee.label == "tuned-poisson-1" and tu.bent
    assert "+39% over the previous level's" in tu.knee_text


def test_judge_rule_edges(report):
    # a level whose throughput falls below 95% of the offered rate does not keep up, and a
    # later qualifying level does not move the knee past it
    lv = report.variant("stock").levels
    import copy

    levels = [copy.copy(x) for x in lv] + [copy.copy(lv[1])]
    levels[1].throughput_rps = 0.9 * levels[1].offered_rps
    knee, bent = L.judge(levels)
    assert knee is levels[0] and bent and "throughput" in levels[1].why


def test_validity_in_levels(report):
    flags = {lv.label: [f.code for f in lv.flags] for v in report.variants for lv in v.levels}
    assert flags["poisson-4"] == [GENERATOR_LAG, TOO_FEW_RUNS]
    for name in ("poisson-1", *TUNED):
        assert flags[name] == [TOO_FEW_RUNS]


def test_written_report_and_charts(report, tmp_path):
    console = Console(width=200, record=True)
    names = L.write_load_report(report, tmp_path, console)
    text = console.export_text()
    assert "generator-lag" in text and "send lag p99 29.0 ms" in text
    assert "knee at 5.00 req/s offered (poisson:4" in text
    for name in (L.LOAD_MD, L.LOAD_JSON, *names.values()):
        assert (tmp_path / name).stat().st_size > 0
    for name in names.values():
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((tmp_path / L.LOAD_JSON).read_text())
    knees = {v["name"]: v["knee"] for v in doc["variants"]}
    assert knees["stock"]["label"] == "poisson-4" and knees["stock"]["bent"] is False
    assert knees["tuned"]["label"] == "tuned-poisson-1" and knees["tuned"]["bent"] is True
    lv4 = doc["variants"][0]["levels"][1]
    assert lv4["host_load"] == "not sampled"
    assert [f["code"] for f in lv4["validity"]] == [GENERATOR_LAG, TOO_FEW_RUNS]
    md = (tmp_path / L.LOAD_MD).read_text()
    assert "not sampled" in md and "![" in md and "generator-lag" in md


def _line(ax, label):
    return next(ln for ln in ax.lines if ln.get_label() == label)


def test_phase_chart_content(report):
    fig = L.draw_phases(report)
    ax = next(a for a in fig.axes if a.get_title() == "total")
    for v in report.variants:
        med, p95 = _line(ax, f"{v.name} median"), _line(ax, f"{v.name} p95")
        offered = [lv.offered_rps for lv in v.levels]
        assert list(med.get_xdata()) == offered
        assert list(med.get_ydata()) == [lv.stats["total"].median_ms for lv in v.levels]
        assert list(p95.get_ydata()) == [lv.stats["total"].p95_ms for lv in v.levels]
        assert p95.get_linestyle() == "--"
    # CI bars: one vertical segment per level, statistic and variant, spanning its CI
    segs = [s for c in ax.collections for s in c.get_segments()]
    assert len(segs) == 2 * 2 * 2
    lv = report.variant("tuned").levels[1]
    lo, hi = lv.stats["total"].p95_ci_ms
    assert any(np.allclose(s, [[lv.offered_rps, lo], [lv.offered_rps, hi]]) for s in segs)
    assert {a.get_title() for a in fig.axes if a.get_visible()} >= {"scheduling",
                                                                   "instantiation", "total"}


def test_throughput_and_lag_chart_content(report):
    ax = L.draw_throughput(report).axes[0]
    diag = _line(ax, "y = x")
    assert list(diag.get_xdata()) == list(diag.get_ydata())
    for v in report.variants:
        ln = _line(ax, v.name)
        assert list(ln.get_ydata()) == [lv.throughput_rps for lv in v.levels]
    knee = _line(ax, "tuned knee")
    assert list(knee.get_xdata()) == [report.variant("tuned").levels[0].offered_rps]
    assert list(knee.get_ydata()) == [report.variant("tuned").levels[0].throughput_rps]
    _line(ax, "stock knee (≥, no bend seen)")
    ax = L.draw_lag(report).axes[0]
    assert list(_line(ax, "stock").get_ydata()) == [
        _manifest(n)["load"]["lag_ms"]["p99"] for n in STOCK]


def test_cli_variant_grouping(tmp_path):
    out = tmp_path / "curves"
    r = CliRunner().invoke(cli, [
        "curves", "--variant", f"stock={DATA / STOCK[0]},{DATA / STOCK[1]}",
        str(DATA / TUNED[0]), str(DATA / TUNED[1]), "--out", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / L.LOAD_JSON).read_text())
    # the tuned runs were grouped by their manifest: reactive Nomad, xen driver, tuned
    assert [v["name"] for v in doc["variants"]] == ["stock", "tuned/xen:tuned"]
    assert doc["variants"][1]["knee"]["label"] == "tuned-poisson-1"
    assert (out / L.THROUGHPUT_PNG).is_file()


def test_cli_bad_variant():
    r = CliRunner().invoke(cli, ["curves", "--variant", "stock"])
    assert "expected NAME=RUN,RUN" in str(r.exception)


def test_cli_sweep_directory(tmp_path):
    sweep = tmp_path / "sweep"
    variants = {}
    for name, runs in (("stock", STOCK), ("tuned", TUNED)):
        variants[name] = []
        for i, run in enumerate(reversed(runs)):  # index, not file order, decides
            shutil.copytree(DATA / run, sweep / f"{name}-{i}")
            variants[name].append({"level": f"L{run[-1]}", "index": 1 - i,
                                   "run": f"{name}-{i}"})
    (sweep / L.SWEEP_JSON).write_text(json.dumps({"schema": L.SWEEP_SCHEMA,
                                                  "variants": variants}))
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["curves", str(sweep), "--out", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / L.LOAD_JSON).read_text())
    assert [v["name"] for v in doc["variants"]] == ["stock", "tuned"]
    st = doc["variants"][0]
    assert [lv["level"] for lv in st["levels"]] == ["L1", "L4"]
    assert st["knee"]["level"] == "L4"
    assert doc["variants"][1]["knee"]["level"] == "L1"
