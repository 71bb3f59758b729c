"""The whole report from real lab runs (tests/data/report-nomad-stock-tuned).

Recorded with the Nomad lab (Nomad 1.11.3, QEMU/TCG guests, 16 runs each, `--warmup 2`, floor
probes on), with vimprof's micro-VNF driver plugin:

    stock     Nomad as released,               xen-stock driver (artifact download, executor)
    reactive  Nomad reactive build (no lazy    xen-stock driver
              client notification)
    tuned     Nomad reactive build,            xen-tuned driver (local image, direct spawn)

The files are timelines.jsonl, requests.jsonl, manifest.json and hooks.jsonl (driver hooks and
floor probes: instants only); no capture. The tests compare with `tuned` as the baseline, as a
CI pipeline guarding the tuned configuration would.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path
from xml.etree import ElementTree

import pytest
from click.testing import CliRunner

from vimprof.cli import cli
from vimprof.phases import NOMAD
from vimprof.report import chart, gantt_name, plots
from vimprof.report.compare import FLOOR_PHASE, SLOWER, compare
from vimprof.rundir import RunDir

DATA = Path(__file__).parents[1] / "data" / "report-nomad-stock-tuned"
LABELS = ("tuned", "reactive", "stock")
CHARTS = ("phases", "breakdown", "cdf", "runs", *(f"gantt:{lab}" for lab in LABELS))


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The run directories (copied) and the report `vimprof compare` wrote from them."""
    root = tmp_path_factory.mktemp("real")
    runs = root / "runs"
    for lab in LABELS:
        shutil.copytree(DATA / lab, runs / lab)
    out = root / "report"
    result = CliRunner().invoke(
        cli,
        ["compare", *LABELS, "--runs-dir", str(runs), "--out", str(out),
         "--fail-if-slower", "total:10", "--fail-if-slower", "clean:1"],
    )
    cmp = compare([RunDir(runs / lab) for lab in LABELS], n_resamples=0)
    return runs, out, result, cmp


def test_compare_gate_fails_on_the_slower_configurations(real):
    _, out, result, cmp = real
    assert result.exit_code == 1, result.output
    gates = [ln for ln in result.output.splitlines() if "gate failed" in ln]
    assert len(gates) == 2
    assert gates[0].startswith("vimprof: gate failed: total: reactive is slower than tuned by +")
    assert "total: stock is slower than tuned" in gates[1]
    assert "clean:" not in result.output.split("report:")[1]  # clean did not move: no failure
    for lab in ("reactive", "stock"):
        d = cmp.row("total", lab).diff
        assert d.verdict == SLOWER and d.p_value < 1e-4 and d.change_pct > 100
    for name in ("report.md", "report.html", "summary.json", "phases.csv", "trace.json",
                 "phases.png", "breakdown.png", "cdf.png", "runs.png",
                 *(gantt_name(lab) for lab in LABELS)):
        assert (out / name).stat().st_size > 0, name
    table = result.output[: result.output.index("report:")]
    assert max(len(line) for line in table.splitlines()) <= 100
    assert "tuned: warm-up runs 0..1 excluded (manifest campaign.warmup_runs = 2" in table
    assert "Mann-Whitney U (two-sided)" in table


def test_real_warmup_floor_and_overlaps(real):
    _, _, _, cmp = real
    for lab in LABELS:
        d = cmp.label(lab)
        assert d.warmup_runs == 2 and d.warmup_excluded == 2 and d.instances == 14
        assert cmp.stats("total", lab).n == 14 and cmp.stats(FLOOR_PHASE, lab).n == 14
        assert len(d.floor_runs) == 16
    assert cmp.has_breakdown() and cmp.has_floor
    assert cmp.stats("download_artifact", "tuned").n == 0  # the tuned driver has a local image
    # the analyzer's download_artifact (task events) encloses the driver's hooks
    assert cmp.label("stock").breakdown_overlaps[("download_artifact", "spawn")] == 14
    assert not cmp.label("tuned").breakdown_overlaps


def test_real_phase_bars(real):
    _, _, _, cmp = real
    s = chart.summarize(chart.draw(cmp), Path("phases.png"))
    assert s.labels == LABELS and s.legend == NOMAD.stack
    assert s.title.endswith("\nwarm-up excluded: tuned runs 0-1; reactive runs 0-1; stock runs 0-1")
    assert [(g.label, g.phase) for g in s.segments] == [
        (lab, p) for p in NOMAD.stack for lab in LABELS
    ]
    for g in s.segments:
        assert g.width_ms == pytest.approx(cmp.stats(g.phase, g.label).mean_ms)
    assert s.whiskers == 6
    for lab, text in zip(LABELS, s.annotations, strict=True):
        assert f"total {cmp.stats('total', lab).mean_ms:.1f} ms" in text and "(n=14)" in text


def test_real_breakdown_bars(real):
    _, _, _, cmp = real
    s = chart.summarize(chart.draw_breakdown(cmp), Path("breakdown.png"))
    assert s.labels == LABELS
    assert s.legend == (*NOMAD.breakdown, "floor spawn (hypervisor alone)")
    assert len(s.segments) == 3 * 4
    widths = {(g.label, g.phase): g.width_ms for g in s.segments}
    assert widths[("tuned", "download_artifact")] == 0.0
    assert widths[("stock", "spawn")] == pytest.approx(cmp.stats("spawn", "stock").mean_ms)
    assert s.whiskers == 3 * 4 - 1  # every segment but tuned's missing download_artifact
    assert [lab for lab, _ in s.floor_marks] == list(LABELS)
    for lab, x in s.floor_marks:
        spawn = next(g for g in s.segments if g.label == lab and g.phase == "spawn")
        assert x == pytest.approx(spawn.left_ms + cmp.stats(FLOOR_PHASE, lab).mean_ms)
    assert "overlap in time" in s.title
    inst = cmp.stats("instantiation", "stock")
    assert s.annotations[2].startswith(f"instantiation {inst.mean_ms:.1f} ms")


def test_real_cdf_and_runs(real):
    _, _, _, cmp = real
    expected = ["scheduling", "instantiation", "download_artifact", "init_environment", "spawn",
                "clean", FLOOR_PHASE, "total"]
    assert cmp.chart_phases() == expected
    c = plots.summarize(plots.cdf(cmp))
    assert [p.title for p in c.panels] == expected
    for p in c.panels:
        has = tuple(lab for lab in LABELS if cmp.stats(p.title, lab).n)
        assert p.series == has and p.xlabel == "ms"
    assert c.legend == LABELS
    r = plots.summarize(plots.runs(cmp))
    assert [p.title for p in r.panels] == expected
    total = next(p for p in r.panels if p.title == "total")
    assert total.series == tuple(s for lab in LABELS for s in (lab, f"{lab} warm-up (excluded)"))
    assert total.points == 3 * 16 and total.xlabel == "run index"
    assert "warm-up excluded: tuned runs 0-1" in r.suptitle and "drawn hollow" in r.suptitle
    assert "warm-up excluded: tuned runs 0-1" in c.suptitle


def test_real_gantt(real):
    _, _, _, cmp = real
    d = cmp.label("stock")
    inst = plots.typical_instance(cmp, d)
    med = cmp.stats("total", "stock").median_ms
    assert all(abs(inst.ms["total"] - med) <= abs(i.ms["total"] - med) for i in d.counted)
    g = plots.summarize(plots.gantt(cmp, "stock"))
    (panel,) = g.panels
    ticks = panel.yticklabels
    phases = [p for p in cmp.phases if p in inst.record["phases"]]
    assert list(ticks[: len(phases)]) == phases and "spawn" in phases
    keys = {(e["source"], e["name"]) for e in plots.instance_events(d, inst)}
    assert len(ticks) == len(phases) + len(keys)
    assert "Job.Register request [capture @198.18.1.1]" in ticks
    assert "submit [client @pusher]" in ticks
    assert any("[vim]" in t for t in ticks) and any("[hook" in t for t in ticks)
    assert f"run {inst.run}" in panel.title and inst.instance[:8] in panel.title
    assert set(panel.series) == {"client", "capture", "vim", "hook"}


def test_real_html(real):
    _, out, _, cmp = real
    html = (out / "report.html").read_text()
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(svgs) == len(CHARTS)
    for svg in svgs:  # well-formed, text kept as text (searchable)
        assert ElementTree.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"
    assert ">instantiation<" in svgs[0] and ">stock<" in svgs[0] and ">spawn<" in svgs[1]
    ids = re.findall(r' id="([^"]+)"', html)
    assert len(ids) == len(set(ids))  # several SVGs, one page: no clashing ids
    assert "<script" not in html and not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "total: stock is slower than tuned by" in html  # what changed
    assert "CI gate failed" in html and "warm-up runs 0..1 excluded" in html
    for lab in LABELS:
        assert f"{lab}: total median {cmp.stats('total', lab).median_ms:.1f} ms" in html
    assert "breakdown phases overlap in time" in html
    md = (out / "report.md").read_text()
    assert "## CI gate failed" in md and "| total | stock |" in md and "breakdown.png" in md
    assert "| spawn | spawn start | spawn end | hook |" in md  # phase definitions


def test_real_summary_csv_trace(real):
    _, out, _, cmp = real
    doc = json.loads((out / "summary.json").read_text())
    assert len(doc["gate_failures"]) == 2 and doc["baseline"] == "tuned"
    assert {x["label"]: x["warmup_excluded"] for x in doc["labels"]} == dict.fromkeys(LABELS, 2)
    with open(out / "phases.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for lab in LABELS:
        d = cmp.label(lab)
        mine = [r for r in rows if r["label"] == lab]
        assert len(mine) == sum(len(i.ms) for i in d.all_instances) + len(d.floor_runs)
        tot = [r for r in mine if r["phase"] == "total"]
        assert [r["warmup"] for r in tot] == ["true"] * 2 + ["false"] * 14
        assert len([r for r in mine if r["phase"] == FLOOR_PHASE]) == 16
    tr = json.loads((out / "trace.json").read_text())
    evs = tr["traceEvents"]
    threads = [e for e in evs if e["name"] == "thread_name"]
    main = [e for e in threads if "overlapping" not in e["args"]["name"]]
    assert len(main) == 3 * 16 and {e["pid"] for e in threads} == {1, 2, 3}
    x = [e for e in evs if e["ph"] == "X"]
    assert len(x) == sum(len(i.record["phases"]) for lab in LABELS
                         for i in cmp.label(lab).all_instances)
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in x)
    by_thread: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for e in x:
        span = (round(e["ts"], 3), round(e["ts"] + e["dur"], 3))  # µs, to the ns
        by_thread.setdefault((e["pid"], e["tid"]), []).append(span)
    for spans in by_thread.values():  # on one thread: disjoint or nested, never crossing
        for a0, a1 in spans:
            for b0, b1 in spans:
                assert b1 <= a0 or b0 >= a1 or (a0 <= b0 and b1 <= a1) or (b0 <= a0 and a1 <= b1)


def test_plot_command(make_run, tmp_path):
    run = make_run("one", n=4, means={"scheduling": 5.0, "instantiation": 50.0, "spawn": 30.0})
    out = tmp_path / "charts"
    result = CliRunner().invoke(cli, ["plot", str(run.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["phases.png", "breakdown.png", "cdf.png", "runs.png",
                            gantt_name("one")])
    assert result.output.count("chart: ") == 5
