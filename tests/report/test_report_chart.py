import math

import pytest
from matplotlib.container import ErrorbarContainer

from vimprof.phases import NOMAD
from vimprof.report.chart import breakdown_bars, draw, phase_bars
from vimprof.report.compare import compare


@pytest.fixture
def cmp(make_run):
    return compare(
        [
            make_run("stock", n=30, seed=1, means={"scheduling": 50.0, "instantiation": 280.0}),
            make_run("tuned", n=30, seed=2, means={"scheduling": 45.0, "instantiation": 200.0}),
        ],
        n_resamples=0,
    )


def test_chart_content(cmp, tmp_path):
    summary = phase_bars(cmp, tmp_path / "phases.png")
    assert (tmp_path / "phases.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary.labels == ("stock", "tuned")  # one bar per label, baseline first (top)
    assert summary.legend == NOMAD.stack
    assert "ms" in summary.xlabel
    assert len(summary.segments) == 2 * len(NOMAD.stack)
    for label in ("stock", "tuned"):
        segs = [s for s in summary.segments if s.label == label]
        assert [s.phase for s in segs] == list(NOMAD.stack)
        left = 0.0
        for seg in segs:  # stacked end to end, each as long as the phase mean
            assert seg.left_ms == pytest.approx(left)
            assert seg.width_ms == pytest.approx(cmp.stats(seg.phase, label).mean_ms)
            left += seg.width_ms
    assert summary.whiskers == 2 * len(NOMAD.stack)
    assert len(summary.annotations) == 2
    for label, text in zip(("stock", "tuned"), summary.annotations, strict=True):
        tot = cmp.stats("total", label)
        assert f"total {tot.mean_ms:.1f} ms" in text
        assert f"95% CI {tot.ci_low_ms:.1f}–{tot.ci_high_ms:.1f}" in text


def test_whiskers_sit_at_segment_ends_with_ci_half_width(cmp):
    fig = draw(cmp)
    ax = fig.axes[0]
    bars = {}
    for c in ax.containers:
        if not isinstance(c, ErrorbarContainer):
            for bar in c:
                bars[bar.get_gid()] = bar
    spans = []
    for c in ax.containers:
        if isinstance(c, ErrorbarContainer):
            for seg in c.lines[2][0].get_segments():
                (x0, y0), (x1, y1) = seg
                spans.append((round(y0, 6), x0, x1))
    assert len(spans) == 4
    for gid, bar in bars.items():
        label, phase = gid.split("\x1f")
        st = cmp.stats(phase, label)
        end = bar.get_x() + bar.get_width()
        y = round(bar.get_y() + bar.get_height() / 2, 6)
        match = [s for s in spans if s[0] == y and math.isclose((s[1] + s[2]) / 2, end)]
        assert len(match) == 1, (label, phase)
        assert match[0][2] - match[0][1] == pytest.approx(2 * st.ci_half_width_ms)


def test_single_instance_label_has_no_whisker(make_run, make_timeline, tmp_path):
    one = make_run("one", records=[make_timeline(0, {"scheduling": 40.0, "instantiation": 200.0})])
    cmp = compare([make_run("stock", n=10), one], n_resamples=0)
    summary = phase_bars(cmp, tmp_path / "p.png")
    assert len(summary.segments) == 4
    assert summary.whiskers == 2  # only the baseline's segments
    assert summary.annotations[1] == "total 240.0 ms (n=1)"


def test_missing_stack_phase_draws_empty_segment(make_run, tmp_path):
    cmp = compare(
        [make_run("stock", n=10), make_run("sched-only", n=10, means={"scheduling": 30.0})],
        n_resamples=0,
    )
    summary = phase_bars(cmp, tmp_path / "p.png")
    inst = next(
        s for s in summary.segments if s.label == "sched-only" and s.phase == "instantiation"
    )
    assert inst.width_ms == 0.0
    assert summary.annotations[1] == "total: no data"


BREAKDOWN = {"download_artifact": 40.0, "init_environment": 30.0, "spawn": 120.0, "clean": 5.0}


def test_breakdown_chart_with_floor_marks(make_run, make_floor_hook, tmp_path):
    stock = make_run(
        "stock", n=12, seed=1, means={"scheduling": 20.0, "instantiation": 250.0, **BREAKDOWN},
        hooks=[make_floor_hook(i, 60.0 + i % 3) for i in range(12)],
    )
    tuned = make_run(
        "tuned", n=12, seed=2,
        means={"scheduling": 20.0, "instantiation": 150.0, "download_artifact": 2.0,
               "init_environment": 10.0, "spawn": 90.0, "clean": 5.0},
    )
    cmp = compare([stock, tuned], n_resamples=0)
    assert cmp.has_breakdown() and cmp.has_floor
    s = breakdown_bars(cmp, tmp_path / "b.svg")
    assert (tmp_path / "b.svg").read_text().startswith("<svg")
    assert s.labels == ("stock", "tuned")
    assert s.legend == (*NOMAD.breakdown, "floor spawn (hypervisor alone)")
    assert len(s.segments) == 2 * 4 and s.whiskers == 8
    assert "breakdown of instantiation" in s.title
    # the floor mark: start of spawn + mean floor, only for the label that has probes
    (label, x), = s.floor_marks
    spawn = next(g for g in s.segments if g.label == "stock" and g.phase == "spawn")
    assert label == "stock"
    assert x == pytest.approx(spawn.left_ms + cmp.stats("floor spawn", "stock").mean_ms)
    assert s.annotations[0].startswith(
        f"instantiation {cmp.stats('instantiation', 'stock').mean_ms:.1f} ms"
    )


def test_breakdown_chart_only_with_breakdown_phases(make_run):
    from vimprof.report import figures

    plain = compare([make_run("stock", n=5), make_run("tuned", n=5)], n_resamples=0)
    assert not plain.has_breakdown()
    assert list(figures(plain)) == ["phases", "cdf", "runs", "gantt:stock", "gantt:tuned"]
    with_bd = compare(
        [make_run("a", n=5, means={"instantiation": 200.0, "spawn": 100.0}),
         make_run("b", n=5)], n_resamples=0,
    )
    assert with_bd.has_breakdown()
    figs = figures(with_bd)
    assert list(figs) == ["phases", "breakdown", "cdf", "runs", "gantt:a", "gantt:b"]
    assert figs["breakdown"][0] == "breakdown.png"
