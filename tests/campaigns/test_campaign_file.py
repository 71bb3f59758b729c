"""Campaign files (vimprof/campaigns/file.py) and sweeps (vimprof/campaigns/sweep.py).

Parsing, validation errors (each naming the key and its line), the dry-run plan and every
shipped example are tested for real. The sweep's orchestration (level order, sweep.json
after every level, interruption marking, on_failure, campaign.yaml copied) is tested with
the campaign functions (campaigns.nomad.prepare / run_campaign, campaigns.nova.cli_capture)
replaced by stand-ins that write a few requests.jsonl lines: the real campaigns need a lab,
which these unit tests must not start. That is the only stand-in here; a lab test of a real
sweep belongs with the lab tests (marked `lab`).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from vimprof import rundir
from vimprof.campaigns import file as cfile
from vimprof.campaigns import nomad, nova, sweep
from vimprof.cli import cli
from vimprof.errors import VimprofError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

RAMP = """\
version: 1
name: ramp
vim: nomad
target:
  lab: {accel: tcg}
variants:
  stock: {driver: xen-stock, nomad: stock}
  tuned: {driver: xen-tuned, nomad: tuned}
levels:
  - poisson:1
  - poisson:2
  - {arrival: "burst:4@5s", runs: 8, label: burst4}
runs: 20
duration_s: 60
warmup: 2
seed: 42
"""


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_every_example_validates_and_plans():
    files = sorted(EXAMPLES.glob("*.yaml"))
    names = {f.name for f in files}
    assert {"nomad-paper.yaml", "nomad-poisson-ramp.yaml", "nomad-burst.yaml",
            "nova-paper.yaml", "nomad-cluster.yaml"} <= names
    for f in files:
        cf = cfile.load(f)
        lines = cfile.describe_plan(cf)
        assert lines[0].startswith(f"campaign file {f.name} (version 1)")
        assert any(line.startswith("total: ") for line in lines)
        res = CliRunner().invoke(cli, ["run", str(f), "--dry-run"])
        assert res.exit_code == 0, res.output


def test_valid_file_parses_into_the_plan(tmp_path):
    cf = cfile.load(write(tmp_path, RAMP))
    assert (cf.version, cf.name, cf.vim, cf.target) == (1, "ramp", "nomad",
                                                        {"lab": {"accel": "tcg"}})
    assert [v.name for v in cf.variants] == ["stock", "tuned"]
    assert cf.variants[1].options == {"driver": "xen-tuned", "nomad": "tuned"}
    assert [(lv.arrival, lv.runs, lv.label, lv.line) for lv in cf.levels] == [
        ("poisson:1", 20, "poisson:1", 10), ("poisson:2", 20, "poisson:2", 11),
        ("burst:4@5s", 8, "burst4", 12)]
    assert all(lv.seed == 42 and lv.duration_s == 60 for lv in cf.levels)
    assert [cf.dir_name(v, lv) for v, lv in cf.plan()] == [
        "stock-00", "stock-01", "stock-02", "tuned-00", "tuned-01", "tuned-02"]
    planned = cfile.plan(cf)
    assert [p.instances for p in planned] == [20, 20, 8] * 2
    assert planned[2].send_s == pytest.approx(5.0)  # 8 requests, bursts of 4 every 5 s
    assert (cf.warmup, cf.on_failure, cf.timeout_s) == (2, "continue", 60.0)
    assert cf.text == RAMP


def test_defaults_one_variant_one_sequential_level(tmp_path):
    cf = cfile.load(write(tmp_path, "version: 1\nvim: nova\n", "nova-x.yaml"))
    assert cf.name == "nova-x" and cf.lab and cf.timeout_s == 120.0
    assert [(v.name, lv.arrival, lv.runs) for v, lv in cf.plan()] == [
        ("default", "sequential", 10)]


@pytest.mark.parametrize("text, expected", [
    ("version: 1\nvim: nomad\nlevels:\n  - arrival: poisson:1\n    rat: 3\n",
     "c.yaml:5: unknown key 'rat' in levels[0] (known: arrival, duration_s, label, "),
    ("version: 1\nvim: nomad\nrunz: 3\n",
     "c.yaml:3: unknown key 'runz' (known: analyze, arrival, "),
    ("version: 1\nvim: nomad\n\nruns: ten\n", "c.yaml:4: runs must be an integer, not 'ten'"),
    ("version: 1\nvim: nomad\ntarget:\n  lab: {accel: fast}\n",
     "c.yaml:4: target.lab.accel must be one of auto, tcg, kvm, not 'fast'"),
    ("vim: nomad\nruns: 3\n", "c.yaml: no `version` key: add `version: 1` (this vimprof "
                              "reads campaign file version 1)"),
    ("vim: nomad\nversion: 2\n", "c.yaml:2: version 2 is not a campaign file version this "
                                 "vimprof reads (it reads 1)"),
    ("version: 1\nvim: nomad\nlevels:\n  - poisson:1\n  - poisson:fast\n",
     "c.yaml:5: levels[1]: 'poisson:fast': 'fast' is not a rate"),
    ("version: 1\nvim: nomad\nlevels:\n  - {arrival: 'burst:4'}\n",
     "c.yaml:4: levels[0].arrival: 'burst:4': burst:N@T needs"),
    ("version: 1\nvim: nova\narrival: poisson:2\n",
     "c.yaml:3: arrival: Nova campaigns run sequential arrivals only for now, not "
     "'poisson:2'"),
    ("version: 1\nvim: nomad\ntarget:\n  nomad_addr: https://n:4646\n  kernel: /k\n"
     "  token: s3cret\n", "c.yaml:6: unknown key 'token' in target"),
    ("version: 1\nvim: nomad\nvariants:\n  a:\n    nova_driver: tuned\n",
     "c.yaml:5: variants.a.nova_driver is not a nomad option"),
    ("version: 1\nvim: nomad\nruns: 3\nruns: 4\n", "c.yaml:4: key 'runs' appears twice"),
    ("version: 1\nvim: nomad\narrival: sequential\nlevels: [closed:2]\n",
     "c.yaml:4: give `arrival` (one level) or `levels` (a sweep), not both"),
    ("version: 1\nvim: nomad\nruns: 2\nwarmup: 2\n", "c.yaml:4: warmup 2 leaves no measured"),
    ("version: 1\nvim: nomad\nlevels: [poisson:1, poisson:1]\n",
     "c.yaml:3: levels[1] repeats level 'poisson:1'"),
    ("version: 1\nvim: nomad\ntarget:\n  nomad_addr: https://n:4646\n",
     "c.yaml:3: a cluster target needs `kernel`"),
    ("version: 1\nvim: nomad\nruns: [1\n", "c.yaml:4: not valid YAML"),
])
def test_bad_file_is_one_error_naming_key_and_line(tmp_path, text, expected):
    with pytest.raises(VimprofError) as info:
        cfile.load(write(tmp_path, text))
    assert str(info.value).startswith(expected), str(info.value)
    assert "\n" not in str(info.value)


def test_cli_error_is_one_line_exit_2(tmp_path):
    import subprocess
    import sys

    p = write(tmp_path, "version: 1\nvim: nomad\nruns: ten\n")
    res = subprocess.run([sys.executable, "-m", "vimprof.cli", "run", str(p), "--dry-run"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip() == "vimprof: error: c.yaml:3: runs must be an integer, not 'ten'"


def test_dry_run_prints_the_plan_and_brings_nothing_up(tmp_path):
    runs_dir = tmp_path / "runs"
    res = CliRunner().invoke(cli, ["run", str(write(tmp_path, RAMP)), "--dry-run",
                                   "--runs-dir", str(runs_dir)])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "sweep 'ramp', nomad at the embedded lab; 2 variant(s) x 3 level(s)" in out
    assert "1/6 stock-00: poisson:1 (driver=xen-stock, nomad=stock), 20 instance(s)" in out
    assert "6/6 tuned-02: burst4 (driver=xen-tuned, nomad=tuned), 8 instance(s)" in out
    assert "total: 96 instance(s) at most, warm-up 2 run(s) per level, seed 42" in out
    assert "estimate: open-loop sending takes" in out
    assert not runs_dir.exists()


def test_sweep_flags_build_the_same_campaign(tmp_path):
    cf = cfile.from_flags(vim="nomad", label="ramp",
                          variants=("stock:driver=xen-stock,nomad=stock",
                                    "tuned:driver=xen-tuned,nomad=tuned,memory_mb=256"),
                          levels="poisson:1,poisson:2", runs=20, warmup=2, seed=42,
                          target={"accel": "tcg"})
    assert cf.source == "flags" and cf.target == {"lab": {"accel": "tcg"}}
    assert cf.variants[1].options == {"driver": "xen-tuned", "nomad": "tuned",
                                      "memory_mb": 256}
    assert [lv.arrival for lv in cf.levels] == ["poisson:1", "poisson:2"]
    copy = cfile.parse_text(cf.text, "campaign.yaml")  # the copy a run directory gets
    assert [(lv.arrival, lv.runs) for lv in copy.levels] == [("poisson:1", 20), ("poisson:2", 20)]
    assert copy.variants == cf.variants
    with pytest.raises(VimprofError, match="unknown key 'drver' in variants.a"):
        cfile.from_flags(vim="nomad", label="x", variants=("a:drver=qemu",))
    res = CliRunner().invoke(cli, ["sweep", "--label", "s", "--variant", "a:driver=xen-tuned",
                                   "--levels", "poisson:1,burst:2@1s", "--runs", "4",
                                   "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "2/2 a-01: burst:2@1s (driver=xen-tuned), 4 instance(s)" in res.output


def test_token_env(tmp_path, monkeypatch):
    text = ("version: 1\nvim: nomad\ntarget:\n  nomad_addr: https://n:4646\n  kernel: /k\n"
            "  token_env: MY_TOKEN\n")
    cf = cfile.load(write(tmp_path, text))
    monkeypatch.delenv("MY_TOKEN", raising=False)
    with pytest.raises(VimprofError, match=r"token_env names \$MY_TOKEN, which is not set"):
        cfile.token(cf)
    monkeypatch.setenv("MY_TOKEN", "abc")
    assert cfile.token(cf) == "abc"


# -- the sweep's orchestration, with stand-ins for the lab-bound campaign functions -------


class FakeNomad:
    """Stand-in for campaigns.nomad.prepare / run_campaign (no lab): each campaign writes
    `runs` request lines, `fail[label]` of them failed; `interrupt_at` raises
    KeyboardInterrupt after one line, as the real campaign does after its clean-up."""

    def __init__(self, monkeypatch, fail=None, interrupt_at=None, error_at=None):
        self.calls: list[dict] = []
        self.sweep_json_seen: list[dict] = []
        self.fail = fail or {}
        self.interrupt_at, self.error_at = interrupt_at, error_at
        monkeypatch.setattr(nomad, "prepare", self.prepare)
        monkeypatch.setattr(nomad, "run_campaign", self.run_campaign)

    def prepare(self, console, **kw):
        if kw["label"] == self.error_at:
            raise VimprofError("the Nomad API at http://198.18.0.1:4646 does not answer")
        self.calls.append(kw)
        return SimpleNamespace(label=kw["label"], runs=kw["runs"]), SimpleNamespace(
            capture_iface=None)

    def run_campaign(self, spec, target, run, console):
        self.sweep_json_seen.append(json.loads((run.path.parent / "sweep.json").read_text()))
        run.update_manifest(schema=rundir.SCHEMA_VERSION, label=spec.label)
        n_fail = self.fail.get(spec.label, 0)
        with run.writer(rundir.REQUESTS) as w:
            for i in range(spec.runs):
                w.write({"run": i, "ok": i >= n_fail})
                if spec.label == self.interrupt_at:
                    raise KeyboardInterrupt
        return n_fail


def sweep_file(tmp_path, extra=""):
    return cfile.load(write(tmp_path, RAMP.replace("runs: 20", "runs: 4") + extra))


def test_sweep_runs_every_variant_and_level_in_order(tmp_path, monkeypatch):
    fake = FakeNomad(monkeypatch)
    cf = sweep_file(tmp_path)
    res = sweep.run_sweep(cf, _console(), tmp_path / "runs")
    assert res.status == "done" and res.ok
    labels = ["stock-00", "stock-01", "stock-02", "tuned-00", "tuned-01", "tuned-02"]
    assert [c["label"] for c in fake.calls] == labels
    assert [(c["arrival"], c["driver"], c["nomad_variant"], c["runs"]) for c in fake.calls][:3] \
        == [("poisson:1", "xen-stock", "stock", 4), ("poisson:2", "xen-stock", "stock", 4),
            ("burst:4@5s", "xen-stock", "stock", 8)]
    assert {(c["seed"], c["warmup_runs"], c["accel"], c["duration_s"]) for c in fake.calls} \
        == {(42, 2, "tcg", 60)}
    root = tmp_path / "runs" / "ramp"
    doc = json.loads((root / "sweep.json").read_text())
    assert doc["schema"] == "vimprof-sweep/1" and doc["status"] == "done"
    assert (doc["name"], doc["vim"], doc["file"]) == ("ramp", "nomad", "c.yaml")
    assert [(e["level"], e["index"], e["run"], e["runs"], e["failures"], e["status"])
            for e in doc["variants"]["tuned"]] == [
        ("poisson:1", 0, "tuned-00", 4, 0, "done"), ("poisson:2", 1, "tuned-01", 4, 0, "done"),
        ("burst4", 2, "tuned-02", 8, 0, "done")]
    for label in labels:  # the file copied into each run directory, the manifest marked
        assert (root / label / "campaign.yaml").read_text() == cf.text
        assert rundir.RunDir(root / label).manifest()["sweep"]["level"] in (
            "poisson:1", "poisson:2", "burst4")
    # sweep.json was rewritten before each level: the earlier ones done, the current running
    seen = fake.sweep_json_seen[3]
    assert [e["status"] for e in seen["variants"]["stock"]] == ["done"] * 3
    assert [e["status"] for e in seen["variants"]["tuned"]] == ["running"]
    assert not (root / "sweep.json.tmp").exists()


def test_interrupted_sweep_keeps_levels_and_marks_the_current(tmp_path, monkeypatch):
    FakeNomad(monkeypatch, interrupt_at="stock-01")
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(sweep_file(tmp_path), _console(), tmp_path / "runs")
    root = tmp_path / "runs" / "ramp"
    doc = json.loads((root / "sweep.json").read_text())
    assert doc["status"] == "interrupted" and "stock-01" in doc["reason"]
    assert [(e["run"], e["status"], e["runs"]) for e in doc["variants"]["stock"]] == [
        ("stock-00", "done", 4), ("stock-01", "interrupted", 1)]
    assert doc["variants"]["tuned"] == []
    assert (root / "stock-01" / "campaign.yaml").exists()
    assert not (root / "stock-02").exists()


def test_on_failure_stop_ends_the_sweep_and_says_why(tmp_path, monkeypatch):
    FakeNomad(monkeypatch, fail={"stock-01": 3})
    cf = sweep_file(tmp_path, "on_failure: stop\nfailure_threshold: 0.5\n")
    res = sweep.run_sweep(cf, _console(), tmp_path / "runs")
    assert res.status == "stopped" and not res.ok
    doc = json.loads(res.sweep_json.read_text())
    assert doc["status"] == "stopped"
    assert "poisson:2 (stock): 3 of 4 run(s) failed (75%), above the threshold 50%" in \
        doc["reason"]
    assert [e["failures"] for e in doc["variants"]["stock"]] == [0, 3]
    assert doc["variants"]["tuned"] == []


def test_on_failure_continue_counts_failures_and_goes_on(tmp_path, monkeypatch):
    FakeNomad(monkeypatch, fail={"stock-01": 3}, error_at="tuned-00")
    res = sweep.run_sweep(sweep_file(tmp_path), _console(), tmp_path / "runs")
    doc = json.loads(res.sweep_json.read_text())
    assert doc["status"] == "done"
    assert [e["failures"] for e in doc["variants"]["stock"]] == [0, 3, 0]
    assert doc["variants"]["tuned"][0]["status"].startswith("failed: the Nomad API")
    assert [e["status"] for e in doc["variants"]["tuned"][1:]] == ["done", "done"]
    assert not res.ok  # a failed level: `vimprof run` exits 1


def test_existing_sweep_needs_force(tmp_path, monkeypatch):
    FakeNomad(monkeypatch)
    cf = sweep_file(tmp_path)
    sweep.run_sweep(cf, _console(), tmp_path / "runs")
    with pytest.raises(VimprofError, match="already holds a sweep"):
        sweep.run_sweep(cf, _console(), tmp_path / "runs")
    assert sweep.run_sweep(cf, _console(), tmp_path / "runs", force=True).status == "done"


def test_nova_sweep_goes_through_cli_capture(tmp_path, monkeypatch):
    calls = []

    def cli_capture(console, **kw):
        calls.append(kw)
        run = rundir.RunDir.create(kw["label"], kw["runs_dir"], force=kw["force"])
        run.update_manifest(schema=rundir.SCHEMA_VERSION)
        with run.writer(rundir.REQUESTS) as w:
            for i in range(kw["runs"]):
                w.write({"run": i, "ok": i != 0})
        return run, SimpleNamespace(capture_iface=None)

    monkeypatch.setattr(nova, "cli_capture", cli_capture)
    cf = cfile.load(EXAMPLES / "nova-paper.yaml")
    res = sweep.run_sweep(cf, _console(), tmp_path / "runs")
    assert [(c["label"], c["variant"], c["runs"], c["warmup_runs"]) for c in calls] == [
        ("stock-00", "stock", 20, 2), ("tuned-00", "tuned", 20, 2)]
    doc = json.loads(res.sweep_json.read_text())
    assert [e["failures"] for e in doc["variants"]["tuned"]] == [1]
    assert (res.path / "tuned-00" / "campaign.yaml").read_text() == cf.text


def test_cli_run_reports_and_exits_1_when_stopped(tmp_path, monkeypatch):
    FakeNomad(monkeypatch, fail={"stock-00": 4})
    p = write(tmp_path, RAMP.replace("runs: 20", "runs: 4") + "on_failure: stop\n")
    res = CliRunner().invoke(cli, ["run", str(p), "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 1, res.output
    assert "level 1/6 poisson:1 (stock)" in res.output
    assert "sweep stopped (on_failure: stop)" in res.output
    assert str(tmp_path / "runs" / "ramp" / "sweep.json") in res.output


def _console():
    from rich.console import Console

    return Console(file=open("/dev/null", "w"), highlight=False)  # noqa: SIM115
