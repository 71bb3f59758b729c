"""Integration test: Rally (its own venv) runs vimprof's scenario plugin against the real Nova lab,
the report is imported into a run directory and `vimprof compare` reads it.

Needs the Nova lab (tests/nova/conftest.py `nova_lab`, machine-wide lock) and Rally's venv
(scripts/setup-rally); skipped with the reason when either is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from vimprof.cli import cli
from vimprof.rally import task as rtask
from vimprof.rundir import RunDir

DATA = Path(__file__).resolve().parents[1] / "data" / "rally-lab" / "report.json"

pytestmark = pytest.mark.skipif(
    not (rtask.venv() / "bin" / "rally").exists(),
    reason=f"Rally's venv is missing ({rtask.venv()}): run scripts/setup-rally")


def _stats(summary: dict, label: str) -> dict[str, dict]:
    return {s["phase"]: s for s in summary["stats"] if s["label"] == label}


def test_rally_run_import_compare(nova_lab, conn, tmp_path):
    runs_dir = tmp_path / "runs"
    r = CliRunner().invoke(cli, ["rally", "run", "--runs", "2", "--label", "rally-it",
                                 "--poll-ms", "50", "--runs-dir", str(runs_dir)])
    assert r.exit_code == 0, (r.output, r.exception)
    run = RunDir(runs_dir / "rally-it")
    manifest = run.manifest()
    assert manifest["source"] == "rally"
    assert manifest["campaign"]["runs"] == 2
    assert manifest["campaign"]["image_id"] == nova_lab.image_ids["diskless"]
    assert manifest["rally"]["scenario"] == rtask.SCENARIO
    assert manifest["rally"]["version"] == "5.1.1"

    reqs = run.read("requests.jsonl")
    assert [q["ok"] for q in reqs] == [True, True], reqs
    timelines = run.read("timelines.jsonl")
    assert [t["instance"] for t in timelines] == [q["server_id"] for q in reqs]
    for q, t in zip(reqs, timelines, strict=True):
        ph = t["phases"]
        # POST -> ACTIVE contains POST -> 202; the plugin's ns instants agree with Rally's
        # atomic actions (float epoch seconds) to well under a millisecond
        assert 0 < ph["api"]["ms"] < ph["total"]["ms"]
        assert ph["delete"]["ms"] > 0
        assert abs(q["t_active_ns"] - ph["total"]["end_ns"]) < 1_000_000
        assert q["states"][-1]["status"] == "ACTIVE"
        # the server is really gone, and Nova saw vimprof's request ids
        assert conn.compute.get(f"/servers/{q['server_id']}", raise_exc=False).status_code == 404
        api_log = Path(nova_lab.lab_dir, "logs", "nova-api.log").read_text(errors="replace")
        assert q["request_id"] in api_log and q["delete_request_id"] in api_log
    env = json.loads((runs_dir / "rally-it.rally" / "env.json").read_text())
    assert "users" in env["existing@openstack"]
    for name in ("manifest.json", "requests.jsonl", "timelines.jsonl"):
        assert nova_lab.password not in run.file(name).read_text()

    # the recorded report (tests/data/rally-lab) as the baseline, the fresh run against it
    r = CliRunner().invoke(cli, ["rally", "import", str(DATA), "--label", "rally-rec",
                                 "--runs-dir", str(runs_dir)])
    assert r.exit_code == 0, (r.output, r.exception)
    out = tmp_path / "report"
    r = CliRunner().invoke(cli, ["compare", "rally-rec", "rally-it", "--runs-dir",
                                 str(runs_dir), "--out", str(out)])
    assert r.exit_code == 0, (r.output, r.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["vim"] == "nova"
    st = _stats(summary, "rally-it")
    for phase in ("api", "total", "delete", "wait_active", "wait_gone"):
        assert st[phase]["n"] == 2, phase
    assert st["total"]["median_ms"] > st["api"]["median_ms"]
    assert _stats(summary, "rally-rec")["total"]["n"] == 5
    assert (out / "report.html").stat().st_size > 0
