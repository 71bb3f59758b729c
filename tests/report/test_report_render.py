import io
import re

from matplotlib.image import imread
from rich.console import Console

from vimprof.report import CHART_PNG, REPORT_MD, write_report
from vimprof.report.compare import compare
from vimprof.report.render import markdown, render_table, write_markdown


def _two(make_run):
    return [
        make_run("stock", n=30, seed=1),
        make_run(
            "tuned-local-artifacts",
            n=25,
            seed=2,
            means={"scheduling": 48.0, "instantiation": 210.0},
        ),
    ]


def _console(width=100):
    return Console(width=width, record=True, file=io.StringIO(), color_system=None)


def test_table_fits_100_columns_and_holds_the_numbers(make_run):
    cmp = compare(_two(make_run))
    console = _console()
    render_table(cmp, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    for row in cmp.rows:
        s = row.stats
        line = next(
            ln
            for ln in text.splitlines()
            if row.label in ln and f" {s.n} " in ln and f"{s.mean_ms:.1f}" in ln
        )
        for value in (s.median_ms, s.std_ms, s.ci_low_ms, s.ci_high_ms):
            assert f"{value:.1f}" in line
        assert f"×{row.ratio:.2f}" in line
    for phase in cmp.phases:
        assert re.search(rf"^\s*{phase}\s", text, re.M)
    assert "95% CI" in text
    assert "stock: 30 instances, 0 incomplete" in text


def test_table_shows_dash_for_undefined(make_run, make_timeline):
    single = make_run(
        "one", records=[make_timeline(0, {"scheduling": 40.0, "instantiation": 200.0})]
    )
    cmp = compare([make_run("stock"), single])
    console = _console()
    render_table(cmp, console)
    line = next(ln for ln in console.export_text().splitlines() if "one" in ln and "40.0" in ln)
    assert line.split()[-3:-1] == ["-", "-"]  # std and CI


def test_markdown_table_holds_every_label_and_phase(make_run, tmp_path):
    runs = _two(make_run)
    cmp = compare(runs)
    path = write_markdown(cmp, tmp_path / "report.md", "phases.png")
    text = path.read_text()
    assert text == markdown(cmp, "phases.png")
    for phase in cmp.phases:
        for label in cmp.label_names:
            s = cmp.stats(phase, label)
            assert f"| {phase} | {label} | {s.n} | {s.mean_ms:.1f} | {s.median_ms:.1f} |" in text
    for run in runs:
        assert f"`{run.path}`" in text
    assert "![phase breakdown per label](phases.png)" in text
    assert "t(1-α/2, n-1)·s/√n" in text


def test_markdown_escapes_pipes(make_run):
    cmp = compare([make_run("a|b"), make_run("c")])
    assert "| a\\|b |" in markdown(cmp)


def test_write_report_writes_md_and_png(make_run, tmp_path):
    out = tmp_path / "out" / "nested"
    console = _console()
    cmp = write_report(_two(make_run), out, console)
    assert cmp.label_names == ["stock", "tuned-local-artifacts"]
    md = (out / REPORT_MD).read_text()
    chart = re.search(r"!\[[^]]*\]\(([^)]+)\)", md).group(1)
    assert chart == CHART_PNG
    img = imread(out / chart)  # a real PNG, resolvable relative to report.md
    assert img.shape[0] > 200 and img.shape[1] > 600
    assert (img[..., :3] < 0.9).any()  # something drawn, not blank
    assert "tuned-local-artifacts" in console.export_text()
