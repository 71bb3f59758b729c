import csv
import io
import json
import re

from rich.console import Console

from vimprof.report.compare import compare
from vimprof.report.export import (
    CSV_COLUMNS,
    csv_rows,
    nest_lanes,
    safe_attrs,
    summary,
    trace,
)
from vimprof.report.render import markdown, render_table, write_markdown


def _two(make_run, **kw):
    return [
        make_run("stock", n=30, seed=1, **kw),
        make_run(
            "tuned-local-artifacts",
            n=25,
            seed=2,
            means={"scheduling": 48.0, "instantiation": 210.0},
        ),
    ]


def _console(width=100):
    return Console(width=width, record=True, file=io.StringIO(), color_system=None)


def test_tables_fit_100_columns_and_hold_the_numbers(make_run):
    cmp = compare(_two(make_run))
    console = _console()
    render_table(cmp, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    lines = text.splitlines()
    for row in cmp.rows:
        s = row.stats
        line = next(
            ln for ln in lines
            if row.label in ln and f" {s.n} " in ln and f"{s.mean_ms:.1f}" in ln
        )
        for value in (s.median_ms, s.ci_low_ms, s.ci_high_ms, s.p95_ms, *s.median_ci_ms):
            assert f"{value:.1f}" in line
        if row.diff is not None:  # the verdict table: ratio with its CI and the verdict
            d = row.diff
            vline = next(ln for ln in lines if row.label in ln and f"×{d.ratio:.2f} [" in ln)
            assert f"{d.ratio_ci[0]:.2f}–{d.ratio_ci[1]:.2f}" in vline
            assert f"{d.delta_ms:+.1f}" in vline
            assert vline.rstrip().endswith(d.verdict)
    assert cmp.row("instantiation", "tuned-local-artifacts").diff.verdict == "faster"
    for phase in cmp.phases:
        assert re.search(rf"^\s*{phase}\s", text, re.M)
    assert "95% CI" in text and "Mann-Whitney U" in text
    assert "stock: 30 instances, 0 incomplete" in text
    assert "stock: no warm-up declared" in text


def test_table_shows_dash_for_undefined(make_run, make_timeline):
    single = make_run(
        "one", records=[make_timeline(0, {"scheduling": 40.0, "instantiation": 200.0})]
    )
    cmp = compare([make_run("stock"), single])
    console = _console()
    render_table(cmp, console)
    line = next(ln for ln in console.export_text().splitlines() if "one" in ln and "40.0" in ln)
    # mean, CI of mean, median, CI of median, p95
    assert line.split()[-5:] == ["40.0", "-", "40.0", "-", "40.0"]


def test_markdown_holds_every_label_phase_warmup_and_test(make_run, tmp_path):
    runs = _two(make_run, manifest={"campaign": {"warmup_runs": 3}})
    cmp = compare(runs)
    path = write_markdown(cmp, tmp_path / "report.md", "phases.png")
    text = path.read_text()
    assert text == markdown(cmp, "phases.png")
    for phase in cmp.phases:
        for label in cmp.label_names:
            s = cmp.stats(phase, label)
            assert f"| {phase} | {label} | {s.n} | {s.mean_ms:.1f} | {s.median_ms:.1f} |" in text
    assert cmp.stats("total", "stock").n == 27
    for run in runs:
        assert f"`{run.path}`" in text
    assert "![phase breakdown per label](phases.png)" in text
    assert "t(1-α/2, n-1)·s/√n" in text
    assert "stock: warm-up runs 0..2 excluded (manifest campaign.warmup_runs = 3" in text
    assert "tuned-local-artifacts: no warm-up declared" in text
    assert "Mann-Whitney U (two-sided)" in text and "BCa" in text
    d = cmp.row("instantiation", "tuned-local-artifacts").diff
    assert re.search(r"\| instantiation \| tuned-local-artifacts \|.*\| faster \|", text)
    assert f"×{d.ratio:.2f}" in text


def test_markdown_escapes_pipes(make_run):
    cmp = compare([make_run("a|b"), make_run("c")], n_resamples=0)
    assert "| a\\|b |" in markdown(cmp)


def test_summary_json_matches_the_comparison(make_run, tmp_path):
    cmp = compare(_two(make_run))
    doc = json.loads(json.dumps(summary(cmp, ["gate msg"]), allow_nan=False))
    assert doc["baseline"] == "stock" and doc["phases"] == cmp.phases
    assert doc["method"]["test"] == "Mann-Whitney U (two-sided)"
    assert len(doc["stats"]) == len(cmp.rows)
    s = next(x for x in doc["stats"] if x["phase"] == "total" and x["label"] == "stock")
    st = cmp.stats("total", "stock")
    assert s["n"] == st.n and s["median_ms"] == st.median_ms
    assert s["median_ci_ms"] == list(st.median_ci_ms) and s["p99_ms"] == st.p99_ms
    c = next(x for x in doc["comparisons"] if x["phase"] == "instantiation")
    assert c["verdict"] == "faster" and c["label"] == "tuned-local-artifacts"
    assert c["p_value"] == cmp.row("instantiation", "tuned-local-artifacts").diff.p_value
    assert doc["gate_failures"] == ["gate msg"]
    assert doc["labels"][0]["warmup_runs"] == 0


def test_csv_is_one_row_per_instance_and_phase(make_run, make_timeline, tmp_path):
    records = [make_timeline(i, {"scheduling": 10.0 + i, "instantiation": 100.0}) for i in range(4)]
    run = make_run("stock", records=records, manifest={"campaign": {"warmup_runs": 1}})
    cmp = compare([run], n_resamples=0)
    from vimprof.report.export import write_csv

    path = write_csv(cmp, tmp_path / "phases.csv")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 4 * 3 == len(csv_rows(cmp))  # scheduling, instantiation, total (derived)
    sched = [r for r in rows if r["phase"] == "scheduling"]
    assert [float(r["ms"]) for r in sched] == [10.0, 11.0, 12.0, 13.0]
    assert [r["warmup"] for r in sched] == ["true", "false", "false", "false"]
    assert all(r["run"] == str(i) for i, r in enumerate(sched))
    tot = next(r for r in rows if r["phase"] == "total")
    assert tot["source"] == "derived" and tot["start_ns"] == ""
    s0 = sched[0]
    assert (int(s0["end_ns"]) - int(s0["start_ns"])) / 1e6 == float(s0["ms"])


def test_trace_events(make_run, make_timeline):
    rec = make_timeline(0, {"scheduling": 10.0, "instantiation": 100.0}, with_total=True)
    rec["events"] = [
        {"t_ns": rec["phases"]["scheduling"]["start_ns"], "source": "capture", "host": "h",
         "name": "Job.Register request", "attrs": {"job": "j", "AuthToken": "s3cr3t",
                                                    "x": "eyJhbGciOiJIUzI1NiJ9.e30.abc"}},
    ]
    a = make_run("stock", records=[rec])
    b = make_run("tuned", n=3)
    doc = json.loads(json.dumps(trace(compare([a, b], n_resamples=0)), allow_nan=False))
    evs = doc["traceEvents"]
    procs = {e["pid"]: e["args"]["name"] for e in evs if e["name"] == "process_name"}
    assert procs == {1: "stock", 2: "tuned"}
    x = [e for e in evs if e["ph"] == "X" and e["pid"] == 1]
    assert [e["name"] for e in x] == ["total", "scheduling", "instantiation"]  # enclosing first
    assert x[0]["ts"] == 0 and x[0]["dur"] == 110_000.0  # µs
    assert x[2]["ts"] == 10_000.0 and x[2]["dur"] == 100_000.0
    inst = [e for e in evs if e["ph"] == "i"]
    assert len(inst) == 1 and inst[0]["s"] == "t" and inst[0]["cat"] == "capture"
    assert inst[0]["args"] == {"host": "h", "job": "j", "x": "<redacted>"}
    assert len([e for e in evs if e["ph"] == "X" and e["pid"] == 2]) == 3 * 2
    assert "s3cr3t" not in json.dumps(doc)


def test_safe_attrs():
    assert safe_attrs({"SecretID": "a", "auth": "b", "ok": 1, "t": "gAAAAA" + "x" * 30}) == {
        "ok": 1, "t": "<redacted>"}


def test_nest_lanes_separates_crossing_spans():
    spans = [(0, 100), (0, 10), (5, 8), (10, 20), (15, 120), (20, 30), (110, 130)]
    lanes = nest_lanes(spans)
    assert lanes == [0, 0, 0, 0, 1, 0, 0]
    for lane in set(lanes):
        mine = [sp for sp, ln in zip(spans, lanes, strict=True) if ln == lane]
        for a0, a1 in mine:
            for b0, b1 in mine:
                assert b1 <= a0 or b0 >= a1 or a0 <= b0 <= b1 <= a1 or b0 <= a0 <= a1 <= b1
