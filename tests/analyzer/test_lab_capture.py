"""The facts a real lab capture must yield (tests/data/nomad-lab-3runs: 3 sequential runs of
`vimprof capture` on the two-host Nomad lab, scrubbed), checked against sources independent of
the capture: the pusher's client-side instants and Nomad's own task events (one machine, one
clock)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vimprof import rundir
from vimprof.analyzer import analyze_run
from vimprof.analyzer.analyze import decode_capture
from vimprof.rundir import RunDir

LAB = Path(__file__).parent.parent / "data" / "nomad-lab-3runs"
ALLOCS = {
    "vimprof-lab3-88c765-0000": "b8615eca-28ea-f411-450b-f8db593eb5c3",
    "vimprof-lab3-88c765-0001": "88f826ab-aa12-821b-71a0-5a361a06b39a",
    "vimprof-lab3-88c765-0002": "5463f55c-3a04-5ae7-3a9b-53405e881014",
}


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    run = RunDir(tmp_path_factory.mktemp("runs") / "lab3")
    shutil.copytree(LAB, run.path)
    result = analyze_run(run)
    requests = {r["alloc_id"]: r for r in run.read(rundir.REQUESTS)}
    task_events: dict[str, dict[str, int]] = {}
    for ev in run.read(rundir.VIM_EVENTS):
        task_events.setdefault(ev["subject"], {})[ev["name"]] = ev["t_ns"]
    return result, run.read(rundir.TIMELINES), requests, task_events


def test_decoders_see_the_whole_conversation():
    d = decode_capture(LAB / "capture.pcap")
    assert d.warnings == [] and d.counts["tcp_gaps"] == 0 and d.counts["rpc_lost_messages"] == 0
    assert {"Node.GetClientAllocs", "Alloc.GetAllocs", "Node.UpdateAlloc"} <= {
        m.method for m in d.rpc}
    registers = [m.path for m in d.http if m.kind == "request" and m.method == "POST"]
    assert registers == [f"/v1/job/{job}" for job in ALLOCS]
    # every Alloc.GetAllocs response names the allocation of the job it belongs to
    for m in d.rpc:
        if m.method == "Alloc.GetAllocs" and m.direction == "response":
            for alloc in m.body["Allocs"]:
                assert ALLOCS[alloc["JobID"]] == alloc["ID"]


def test_one_complete_timeline_per_run(analyzed):
    result, timelines, requests, _ = analyzed
    assert result.counts["timelines"] == 3 and result.counts["incomplete"] == 0
    assert {t["instance"] for t in timelines} == set(ALLOCS.values()) == set(requests)
    for t in timelines:
        assert t["complete"] and t["issues"] == []
        assert ALLOCS[t["job"]] == t["instance"]
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


def test_timelines_hold_no_credential(analyzed):
    _, timelines, _, _ = analyzed
    text = json.dumps(timelines)
    assert "eyJ" not in text and "AuthToken" not in text and "SecretID" not in text
