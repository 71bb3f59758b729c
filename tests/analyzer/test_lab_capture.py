"""The facts a real lab capture must yield, on each Nomad version users run: 3 sequential runs of
`vimprof capture` on the two-host Nomad lab, scrubbed (tests/data/nomad-lab-3runs: Nomad
v1.11.3, whose clients authenticate with node identity JWTs; tests/data/nomad163-lab-3runs:
v1.6.3, whose clients send their node SecretID as AuthToken), checked against sources
independent of the capture: the pusher's client-side instants and Nomad's own task events (one
machine, one clock)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vimprof import rundir
from vimprof.analyzer import analyze_run
from vimprof.analyzer.pipeline import decode_capture
from vimprof.rundir import RunDir

DATA = Path(__file__).parent.parent / "data"
LABS = {"v1.11.3": DATA / "nomad-lab-3runs", "v1.6.3": DATA / "nomad163-lab-3runs"}
PHASES = {"api", "scheduling", "client_pickup", "task_start", "notification", "instantiation",
          "total", "commit", "stop"}


@pytest.fixture(scope="module", params=sorted(LABS))
def lab(request) -> Path:
    return LABS[request.param]


def _allocs(lab: Path) -> dict[str, str]:
    """job id -> allocation id, from the pusher's requests.jsonl (the client's view)."""
    return {r["job_id"]: r["alloc_id"] for r in RunDir(lab).read(rundir.REQUESTS)}


@pytest.fixture(scope="module")
def analyzed(lab, tmp_path_factory):
    run = RunDir(tmp_path_factory.mktemp("runs") / "lab3")
    shutil.copytree(lab, run.path)
    result = analyze_run(run)
    requests = {r["alloc_id"]: r for r in run.read(rundir.REQUESTS)}
    task_events: dict[str, dict[str, int]] = {}
    for ev in run.read(rundir.VIM_EVENTS):
        task_events.setdefault(ev["subject"], {})[ev["name"]] = ev["t_ns"]
    return result, run.read(rundir.TIMELINES), requests, task_events


def test_the_capture_is_of_the_version_it_claims(lab):
    version = RunDir(lab).manifest()["vim"]["version"]
    assert f"v{version}" in LABS and LABS[f"v{version}"] == lab


def test_decoders_see_the_whole_conversation(lab):
    allocs = _allocs(lab)
    d = decode_capture(lab / "capture.pcap")
    assert d.warnings == [] and d.counts["tcp_gaps"] == 0 and d.counts["rpc_lost_messages"] == 0
    assert {"Node.GetClientAllocs", "Alloc.GetAllocs", "Node.UpdateAlloc"} <= {
        m.method for m in d.rpc}
    registers = [m.path for m in d.http if m.kind == "request" and m.method == "POST"]
    assert registers == [f"/v1/job/{job}" for job in allocs]
    # every Alloc.GetAllocs response names the allocation of the job it belongs to
    for m in d.rpc:
        if m.method == "Alloc.GetAllocs" and m.direction == "response":
            for alloc in m.body["Allocs"]:
                assert allocs[alloc["JobID"]] == alloc["ID"]


def test_one_complete_timeline_per_run(lab, analyzed):
    allocs = _allocs(lab)
    result, timelines, requests, _ = analyzed
    assert result.counts["timelines"] == 3 and result.counts["incomplete"] == 0
    assert {t["instance"] for t in timelines} == set(allocs.values()) == set(requests)
    for t in timelines:
        assert t["complete"] and t["issues"] == []
        assert set(t["phases"]) == PHASES
        assert allocs[t["job"]] == t["instance"]
        assert t["run"] == requests[t["instance"]]["run"]


def test_phases_agree_with_client_times_and_task_events(analyzed):
    _, timelines, requests, task_events = analyzed
    for t in timelines:
        p, req, ev = t["phases"], requests[t["instance"]], task_events[t["instance"]]
        # the register left the pusher, then crossed the capture point, then was answered
        assert req["t_submit_ns"] <= p["total"]["start_ns"] <= req["t_registered_ns"]
        # the server learned "running" before the pusher's blocking query saw it
        assert p["total"]["end_ns"] <= req["t_running_ns"]
        # the client received the allocation after it reached the client on the wire, and
        # started the task inside the instantiation phase
        assert p["scheduling"]["end_ns"] <= ev["Received"]
        assert p["instantiation"]["start_ns"] <= ev["Started"] <= p["instantiation"]["end_ns"]
        # the paper's lazy notification: most of instantiation is waiting for the
        # client's 200 ms batch ticker, after the task started
        assert p["scheduling"]["ms"] < 100
        assert p["instantiation"]["end_ns"] - ev["Started"] > 100e6
        # the finer phases chain: register answered inside scheduling, the pull answered,
        # the task started, the running report sent, then committed by the server (its
        # 50 ms update batch) before the pusher could see "running"
        assert p["api"]["start_ns"] == p["total"]["start_ns"]
        assert p["api"]["end_ns"] <= req["t_registered_ns"]
        assert p["client_pickup"]["start_ns"] == p["scheduling"]["end_ns"]
        assert p["task_start"]["end_ns"] == p["notification"]["start_ns"]
        assert p["notification"]["end_ns"] == p["total"]["end_ns"] == p["commit"]["start_ns"]
        assert 40 < p["commit"]["ms"] < 200
        # the pusher's blocking query wakes at the Raft apply, just before the reply leaves
        assert p["commit"]["end_ns"] <= req["t_running_ns"] + 5e6
        assert p["commit"]["ms"] >= 0.8 * (req["t_running_ns"] - p["total"]["end_ns"]) / 1e6
        # the stop: deregister to the terminal report, inside the pusher's stop wait
        assert req["t_stop_ns"] <= p["stop"]["start_ns"] < p["stop"]["end_ns"] <= req["t_gone_ns"]


def test_timelines_hold_no_credential(analyzed):
    _, timelines, _, _ = analyzed
    text = json.dumps(timelines)
    assert "eyJ" not in text and "AuthToken" not in text and "SecretID" not in text
