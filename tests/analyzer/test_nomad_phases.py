from __future__ import annotations

import json

from vimprof.analyzer.builders.nomad_phases import build_timelines
from vimprof.analyzer.decoders.http import HttpMessage
from vimprof.analyzer.decoders.nomad_rpc import RpcMessage

A1 = "11111111-0000-0000-0000-000000000001"
A2 = "22222222-0000-0000-0000-000000000002"
EVAL = "eeeeeeee-0000-0000-0000-00000000000e"
HTTP = ("10.0.0.9", 50000, "10.0.0.2", 4646)
RPC = ("10.0.0.1", 40000, "10.0.0.2", 4647)
MS = 1_000_000


REPLY = b'{"EvalID":"%s"}' % EVAL.encode()


def http_pair(t, method, path, body, resp_body=REPLY, dt=5 * MS):
    req = HttpMessage("request", t, t + MS, method=method, path=path, body=body, conn=HTTP)
    resp = HttpMessage(
        "response", t + dt, t + dt, status=200, body=resp_body, conn=HTTP, request=req
    )
    return [req, resp]


def rpc(method, direction, body, t_first, t_last=None, seq=1, request=None):
    sender = RPC[0] if direction == "request" else RPC[2]
    return RpcMessage(
        method, direction, seq, "", body, t_first, t_last or t_first, RPC, 1, 1, sender, request
    )


def scenario():
    t = 1_000 * MS
    http = http_pair(t, "PUT", "/v1/jobs", json.dumps({"Job": {"ID": "web"}}).encode())
    http += http_pair(t + 900 * MS, "DELETE", "/v1/job/web?purge=true", b"")
    gca = rpc("Node.GetClientAllocs", "response", {"Allocs": {A1: 10}}, t + 20 * MS, t + 21 * MS)
    pull = rpc("Alloc.GetAllocs", "request", {"AllocIDs": [A1]}, t + 25 * MS, t + 26 * MS, seq=2)
    pulled = rpc(
        "Alloc.GetAllocs",
        "response",
        {
            "Allocs": [
                {
                    "ID": A1,
                    "JobID": "web",
                    "EvalID": EVAL,
                    "ClientStatus": "pending",
                    "DesiredStatus": "run",
                }
            ]
        },
        t + 27 * MS,
        t + 28 * MS,
        seq=2,
        request=pull,
    )
    upd = rpc(
        "Node.UpdateAlloc",
        "request",
        {
            "Alloc": [
                {
                    "ID": A1,
                    "ClientStatus": "running",
                    "TaskStates": {
                        "t": {
                            "State": "running",
                            "Events": [
                                {"Type": "Received", "Time": t + 30 * MS},
                                {"Type": "Started", "Time": t + 200 * MS},
                            ],
                        }
                    },
                }
            ]
        },
        t + 400 * MS,
        t + 401 * MS,
        seq=3,
    )
    upd_ack = rpc("Node.UpdateAlloc", "response", {"Index": 5}, t + 460 * MS, seq=3, request=upd)
    upd2 = rpc(
        "Node.UpdateAlloc",
        "request",
        {"Alloc": [{"ID": A1, "ClientStatus": "running"}]},
        t + 600 * MS,
        t + 601 * MS,
        seq=4,
    )
    done = rpc(
        "Node.UpdateAlloc",
        "request",
        {
            "Alloc": [
                {
                    "ID": A1,
                    "ClientStatus": "complete",
                    "TaskStates": {"t": {"Events": [{"Type": "Killed", "Time": t + 990 * MS}]}},
                }
            ]
        },
        t + 1000 * MS,
        t + 1001 * MS,
        seq=5,
    )
    return http, [gca, pull, pulled, upd, upd_ack, upd2, done], t


def test_complete_timeline():
    http, rpcs, t = scenario()
    (tl,) = build_timelines(http, rpcs, {"web": 3})
    assert tl["vim"] == "nomad" and tl["instance"] == A1 and tl["job"] == "web"
    assert tl["run"] == 3 and tl["complete"] and tl["issues"] == []
    ph = tl["phases"]
    assert ph["scheduling"]["start_ns"] == t and ph["scheduling"]["end_ns"] == t + 21 * MS
    assert ph["scheduling"]["ms"] == 21.0
    assert ph["scheduling"]["from"] == "Job.Register request"
    assert ph["scheduling"]["to"] == "Node.GetClientAllocs response"
    assert ph["instantiation"]["start_ns"] == t + 25 * MS
    assert ph["instantiation"]["end_ns"] == t + 401 * MS  # t_last of the first running report
    assert ph["total"]["ms"] == 401.0 and ph["total"]["source"] == "capture"
    names = [e["name"] for e in tl["events"]]
    assert names == [
        "Job.Register request",
        "Job.Register response",
        "Node.GetClientAllocs response",
        "Alloc.GetAllocs request",
        "Alloc.GetAllocs response",
        "Task event Received",
        "Task event Started",
        "Node.UpdateAlloc request",
        "Node.UpdateAlloc response",
        "Job.Deregister request",
        "Job.Deregister response",
        "Task event Killed",
        "Node.UpdateAlloc request",
    ]
    # the second "running" is no news; the terminal "complete" is
    assert names.count("Node.UpdateAlloc request") == 2
    assert ph["api"]["ms"] == 5.0
    assert ph["client_pickup"]["start_ns"] == t + 21 * MS
    assert ph["client_pickup"]["end_ns"] == t + 28 * MS
    assert ph["task_start"]["end_ns"] == t + 200 * MS
    assert ph["task_start"]["to"] == "Task event Started"
    assert ph["notification"]["ms"] == 201.0
    # commit: the running report's arrival to the server's reply
    assert ph["commit"]["start_ns"] == ph["total"]["end_ns"]
    assert ph["commit"]["to"] == "Node.UpdateAlloc response"
    assert ph["commit"]["end_ns"] > ph["commit"]["start_ns"]
    assert ph["stop"]["start_ns"] == t + 900 * MS and ph["stop"]["end_ns"] == t + 1001 * MS
    started = tl["events"][6]
    assert started["attrs"] == {
        "alloc": A1, "task": "t", "clock": "client", "via": "Node.UpdateAlloc"
    }
    dereg = tl["events"][9]
    assert dereg["attrs"] == {
        "job": "web",
        "via": "http",
        "method": "DELETE",
        "path": "/v1/job/web",
        "purge": True,
    }
    assert all(e["source"] == "capture" for e in tl["events"])


def test_missing_register_leaves_phases_out():
    _, rpcs, _ = scenario()
    (tl,) = build_timelines([], rpcs)
    assert not tl["complete"]
    assert set(tl["phases"]) == {"instantiation", "client_pickup", "task_start", "notification",
                                 "commit"}
    assert any("Job.Register request" in i for i in tl["issues"])


def test_missing_running_report():
    http, rpcs, _ = scenario()
    (tl,) = build_timelines(http, rpcs[:3])
    assert set(tl["phases"]) == {"scheduling", "api", "client_pickup"} and not tl["complete"]
    assert any("instantiation left out" in i and "running" in i for i in tl["issues"])


def test_register_variants_and_non_register_paths():
    t = 10 * MS
    for method, path, body in [
        ("POST", "/v1/job/web", b'{"job": {"id": "web"}}'),
        ("PUT", "/v1/jobs", b'{"ID": "web", "TaskGroups": []}'),
    ]:
        http = http_pair(t, method, path, body)
        _, rpcs, _ = scenario()
        (tl,) = build_timelines(http, rpcs)
        assert "scheduling" in tl["phases"], (method, path)
    for path in ("/v1/job/web/plan", "/v1/job/web/evaluate", "/v1/job/web/dispatch"):
        http = http_pair(t, "PUT", path, b'{"Job": {"ID": "web"}}')
        _, rpcs, _ = scenario()
        (tl,) = build_timelines(http, rpcs)
        assert "scheduling" not in tl["phases"], path


def test_getallocs_request_counts_as_reach_when_earlier():
    _, rpcs, t = scenario()
    http = http_pair(t, "PUT", "/v1/jobs", b'{"Job": {"ID": "web"}}')
    rpcs = rpcs[1:]  # no GetClientAllocs seen
    (tl,) = build_timelines(http, rpcs)
    assert tl["phases"]["scheduling"]["to"] == "Alloc.GetAllocs request"


def test_unknown_job_and_two_allocs():
    http, rpcs, t = scenario()
    extra = rpc("Node.GetClientAllocs", "response", {"Allocs": {A1: 10, A2: 11}}, t + 50 * MS)
    tls = build_timelines(http, rpcs + [extra])
    by = {x["instance"]: x for x in tls}
    assert by[A1]["complete"] and by[A2]["job"] is None
    assert any("job unknown" in i for i in by[A2]["issues"])


def test_no_secret_reaches_the_timeline():
    http, rpcs, _ = scenario()
    http[0].headers = {}
    http[0].body = b'{"Job": {"ID": "web", "Meta": {"token": "TOPSECRET"}}}'
    http[0].path = "/v1/jobs?token=TOPSECRET"
    out = json.dumps(build_timelines(http, rpcs))
    assert "TOPSECRET" not in out
