from click.testing import CliRunner

from vimprof.cli import cli
from vimprof.errors import VimprofError


def _invoke(*args):
    return CliRunner().invoke(cli, list(args))


def test_gate_on_unknown_phase_fails_before_writing(make_run, tmp_path):
    a, b = make_run("stock", n=5), make_run("tuned", n=5)
    out = tmp_path / "report"
    r = _invoke("compare", str(a.path), str(b.path), "--out", str(out),
                "--fail-if-slower", "spawn:5")
    assert isinstance(r.exception, VimprofError)
    assert "no phase 'spawn' in these runs" in str(r.exception)
    assert not any(out.iterdir())


def test_malformed_gate_and_single_run(make_run):
    a = make_run("stock", n=5)
    r = _invoke("compare", str(a.path), str(a.path), "--fail-if-slower", "total")
    assert isinstance(r.exception, VimprofError) and "PHASE:PCT" in str(r.exception)
    r = _invoke("compare", str(a.path))
    assert isinstance(r.exception, VimprofError) and "at least two runs" in str(r.exception)


def test_plot_needs_timelines(tmp_path):
    (tmp_path / "empty").mkdir()
    r = _invoke("plot", str(tmp_path / "empty"))
    assert isinstance(r.exception, VimprofError) and "vimprof analyze" in str(r.exception)
