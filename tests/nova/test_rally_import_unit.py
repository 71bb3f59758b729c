"""Unit tests of the Rally report importer (vimprof/rally/importer.py) on REAL Rally JSON reports
recorded from the Nova lab (tests/data/rally-*/report.json, see the README there)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from vimprof.cli import cli
from vimprof.errors import VimprofError
from vimprof.rally import importer
from vimprof.rally.task import SCENARIO
from vimprof.report import load_label
from vimprof.rundir import RunDir

DATA = Path(__file__).resolve().parents[1] / "data"
LAB = DATA / "rally-lab" / "report.json"
FAULT = DATA / "rally-fault" / "report.json"


def _iterations(path: Path) -> list[dict]:
    (task,) = json.loads(path.read_text())["tasks"]
    return task["subtasks"][0]["workloads"][0]["data"]


def test_import_lab_report(tmp_path):
    run = importer.import_report(LAB, "rl", tmp_path)
    m = run.manifest()
    assert m["source"] == "rally"
    assert m["vim"]["name"] == "nova"
    assert m["campaign"]["runs"] == 5 and m["campaign"]["concurrency"] == 2
    assert m["campaign"]["poll_ms"] == 50.0 and m["campaign"]["networks"] == "none"
    assert m["campaign"]["flavor_id"] == "vimprof-micro"
    assert m["rally"]["scenario"] == SCENARIO and m["rally"]["version"] == "5.1.1"
    assert m["failures"] == 0 and m["start_ns"] < m["end_ns"]

    timelines = run.read("timelines.jsonl")
    reqs = run.read("requests.jsonl")
    assert [t["run"] for t in timelines] == [0, 1, 2, 3, 4]
    starts = [t["phases"]["total"]["start_ns"] for t in timelines]
    assert starts == sorted(starts)
    iters = sorted(_iterations(LAB), key=lambda it: it["timestamp"])
    for t, q, it in zip(timelines, reqs, iters, strict=True):
        assert t["vim"] == "nova" and t["complete"] is False
        assert t["issues"] == [importer.ISSUE]
        ph = t["phases"]
        assert set(ph) == {"total", "api", "wait_active", "delete", "delete_api", "wait_gone"}
        for p in ph.values():
            assert p["ms"] == pytest.approx((p["end_ns"] - p["start_ns"]) / 1e6)
            assert p["source"] == "rally"
        (total, delete) = it["atomic_actions"]
        assert ph["total"]["ms"] == pytest.approx(
            (total["finished_at"] - total["started_at"]) * 1e3, abs=1e-3)
        # api and wait_active tile total; the delete path follows the boot
        assert ph["api"]["ms"] + ph["wait_active"]["ms"] == pytest.approx(ph["total"]["ms"],
                                                                          abs=0.1)
        assert ph["delete"]["start_ns"] >= ph["total"]["end_ns"]
        facts = {r[0]: json.loads(r[1]) for r in it["output"]["complete"][0]["data"]["rows"]}
        assert t["instance"] == q["server_id"] == facts["server_id"]
        assert t["job"] == q["request_id"] == facts["request_id"]
        assert q["ok"] is True and q["source"] == "rally"
        assert q["api_ms"] == pytest.approx((facts["t_accepted_ns"] - facts["t_submit_ns"]) / 1e6)
        assert q["states"][-1]["status"] == "ACTIVE"
        assert [e["t_ns"] for e in t["events"]] == sorted(e["t_ns"] for e in t["events"])
    # concurrency 2: the first two iterations overlap
    assert timelines[1]["phases"]["total"]["start_ns"] < timelines[0]["phases"]["total"]["end_ns"]


def test_import_fault_report(tmp_path):
    run = importer.import_report(FAULT, "rf", tmp_path)
    (t,) = run.read("timelines.jsonl")
    (q,) = run.read("requests.jsonl")
    assert q["ok"] is False and q["status"] == "ERROR"
    assert q["fault"].startswith("No valid host was found")
    assert q["error"].startswith("ServerFault: server ") and "ERROR" in q["error"]
    assert q["t_gone_ns"] > q["t_delete_ns"]  # the plugin deleted the failed server
    assert "total" not in t["phases"] and "api" in t["phases"]
    assert any(i.startswith("total:") for i in t["issues"])
    assert any(i.startswith("iteration failed: ServerFault") for i in t["issues"])
    assert run.manifest()["failures"] == 1


def test_compare_reads_imported_runs(tmp_path):
    importer.import_report(LAB, "a", tmp_path)
    importer.import_report(LAB, "b", tmp_path, warmup_runs=2)
    importer.import_report(FAULT, "c", tmp_path)
    out = tmp_path / "rep"
    r = CliRunner().invoke(cli, ["compare", "a", "b", "c", "--runs-dir", str(tmp_path),
                                 "--out", str(out)])
    assert r.exit_code == 0, (r.output, r.exception)
    summary = json.loads((out / "summary.json").read_text())
    n = {(s["label"], s["phase"]): s["n"] for s in summary["stats"]}
    assert n[("a", "total")] == 5 and n[("b", "total")] == 3 and n[("a", "delete")] == 5
    assert n.get(("c", "total"), 0) == 0
    labels = {x["label"]: x for x in summary["labels"]}
    assert labels["c"]["failures"] == 1 and labels["b"]["warmup_excluded"] == 2
    data = load_label(RunDir(tmp_path / "a"))
    assert data.vim == "nova" and data.instances == 5 and data.incomplete == 5
    assert len(data.durations_ms["api"]) == 5 and "conductor" not in data.durations_ms


def test_cli_import_and_errors(tmp_path):
    ok = CliRunner().invoke(cli, ["rally", "import", str(LAB), "--label", "x", "--runs-dir",
                                  str(tmp_path)])
    assert ok.exit_code == 0 and "5 iteration(s), 0 failed" in ok.output
    again = CliRunner().invoke(cli, ["rally", "import", str(LAB), "--label", "x",
                                     "--runs-dir", str(tmp_path)])
    assert isinstance(again.exception, VimprofError) and "--force" in str(again.exception)

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(VimprofError, match="not JSON"):
        importer.import_report(bad, "y", tmp_path)
    bad.write_text('{"results": []}')
    with pytest.raises(VimprofError, match="not a Rally JSON report"):
        importer.import_report(bad, "y", tmp_path)
    other = json.loads(LAB.read_text())
    wl = other["tasks"][0]["subtasks"][0]["workloads"][0]
    wl["scenario"] = {"Dummy.dummy": {}}
    bad.write_text(json.dumps(other))
    with pytest.raises(VimprofError, match="found: Dummy.dummy"):
        importer.import_report(bad, "y", tmp_path)
    with pytest.raises(VimprofError, match="no workload .* in task nope"):
        importer.import_report(LAB, "y", tmp_path, task_uuid="nope")
    with pytest.raises(VimprofError, match="leaves no measured run"):
        importer.import_report(LAB, "y", tmp_path, warmup_runs=5)
    assert not (tmp_path / "y").exists()


def test_scrub():
    tok = "gAAAAABl" + "x" * 40
    doc = {"auth": {"password": "pw", "token": None}, "pass_sla": True,
           "error": ["Unauthorized", f"token {tok} expired"], "os_auth_token": "abc"}
    out = importer.scrub(doc)
    assert out["auth"] == {"password": importer.SCRUBBED, "token": None}
    assert out["pass_sla"] is True and out["os_auth_token"] == importer.SCRUBBED
    assert tok not in json.dumps(out)
    # the committed reports hold no secret: scrubbing changes nothing
    for path in (LAB, FAULT):
        doc = json.loads(path.read_text())
        assert importer.scrub(doc) == doc
