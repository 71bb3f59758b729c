from __future__ import annotations

import json

import pytest

from vimprof.analyzer import analyze_capture, analyze_run
from vimprof.errors import VimprofError
from vimprof.rundir import CAPTURE, REQUESTS, TIMELINES, RunDir

from . import wire

ALLOC = "5d3c1a6e-0d9f-4a0a-9c3e-6a1b2c3d4e5f"
MS = 1_000_000


def synthetic_capture() -> bytes:
    """A register over HTTP and the client RPCs of its allocation, on one Ethernet capture."""
    http = wire.Flow(client=("10.0.0.9", 50000), server=("10.0.0.2", 4646))
    rpc = wire.Flow(client=("10.0.0.1", 40000), server=("10.0.0.2", 4647))
    http.t = rpc.t = 1_700_000_000 * 1_000_000_000
    http.handshake()
    body = json.dumps({"Job": {"ID": "web"}}).encode()
    http.send(
        0,
        b"PUT /v1/jobs HTTP/1.1\r\nX-Nomad-Token: TOPSECRET\r\nContent-Length: %d\r\n"
        b"\r\n" % len(body) + body,
    )
    http.send(1, b'HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{"EvalID":"e"}', dt=5 * MS)
    t_register = http.packets[3][0]
    rpc.t = http.t
    rpc.handshake()
    rpc.send(0, b"\x06" + wire.yamux(1, 1, 1) + wire.yamux(1, 1, 3))
    rpc.send(
        1,
        wire.yamux(0, 0, 1, wire.rpc_response("Node.GetClientAllocs", 1, {"Allocs": {ALLOC: 5}})),
        dt=20 * MS,
    )
    req = b"\x01" + wire.rpc_request("Alloc.GetAllocs", 1, {"AllocIDs": [ALLOC]})
    rpc.send(0, wire.yamux(0, 0, 3, req), dt=MS)
    rpc.send(
        1,
        wire.yamux(
            0,
            0,
            3,
            wire.rpc_response(
                "Alloc.GetAllocs", 1, {"Allocs": [{"ID": ALLOC, "JobID": "web", "EvalID": "e"}]}
            ),
        ),
    )
    upd = wire.rpc_request(
        "Node.UpdateAlloc", 2, {"Alloc": [{"ID": ALLOC, "ClientStatus": "running"}]}
    )
    frame = wire.yamux(0, 0, 3, upd)
    rpc.send(0, frame[:20], dt=300 * MS)
    rpc.send(0, frame[20:], dt=2 * MS)
    t_running = rpc.t
    packets = sorted(http.packets + rpc.packets, key=lambda p: p[0])
    # the response to GetClientAllocs on stream 1 is not paired (request not captured): fine
    recs = [(t, wire.eth(f)) for t, f in packets]
    data = wire.pcap(recs, nano=True)
    synthetic_capture.t_register = t_register
    synthetic_capture.t_running = t_running
    return data


def test_analyze_run_writes_timelines(tmp_path):
    run = RunDir.create("synthetic", root=tmp_path)
    run.file(CAPTURE).write_bytes(synthetic_capture())
    with run.writer(REQUESTS) as w:
        w.write({"job_id": "web", "run": 0})
    run.file(TIMELINES).write_text("stale\n")
    res = analyze_run(run)
    lines = run.file(TIMELINES).read_text().splitlines()
    assert len(lines) == 1 and "stale" not in lines[0]
    (tl,) = [json.loads(x) for x in lines]
    assert tl["instance"] == ALLOC and tl["job"] == "web" and tl["run"] == 0
    assert tl["complete"], tl["issues"]
    assert tl["phases"]["total"]["start_ns"] == synthetic_capture.t_register
    assert tl["phases"]["total"]["end_ns"] == synthetic_capture.t_running
    assert tl["phases"]["scheduling"]["ms"] < tl["phases"]["total"]["ms"]
    assert "TOPSECRET" not in run.file(TIMELINES).read_text()
    assert res.counts["timelines"] == 1 and res.counts["incomplete"] == 0
    assert res.counts["http_messages"] == 2 and res.counts["rpc_messages"] == 4
    assert res.counts["connections"] == 2 and not res.truncated
    assert res.summary() == (
        "1 timelines (0 incomplete) from 14 packets, 2 connections, 2 HTTP and 4 RPC messages"
    )


def test_truncated_capture_gives_partial_timelines_and_a_warning(tmp_path):
    run = RunDir.create("cut", root=tmp_path)
    data = synthetic_capture()
    run.file(CAPTURE).write_bytes(data[:-10])  # the last UpdateAlloc segment is cut
    res = analyze_run(run)
    assert res.truncated and any(w.startswith("capture truncated") for w in res.warnings)
    (tl,) = res.timelines
    assert not tl["complete"] and "scheduling" in tl["phases"] and "total" not in tl["phases"]


def test_missing_and_bad_captures(tmp_path):
    run = RunDir.create("empty", root=tmp_path)
    with pytest.raises(VimprofError, match="no capture.pcap in"):
        analyze_run(run)
    run.file(CAPTURE).write_text("not a capture")
    with pytest.raises(VimprofError, match="not a pcap/pcapng capture"):
        analyze_run(run)


def test_garbage_on_vim_ports_is_counted_not_raised(tmp_path):
    f = wire.Flow(server=("10.0.0.2", 4646))
    f.handshake()
    f.send(0, b"\x00\xff garbage \x00" * 20)
    g = wire.Flow(client=("10.0.0.1", 40001), server=("10.0.0.2", 4647))
    g.handshake()
    g.send(0, b"\x06" + b"\xee" * 100)
    p = tmp_path / "g.pcap"
    p.write_bytes(wire.pcap(f.eth_records() + g.eth_records()))
    assert analyze_capture(p) == []
    run = RunDir(tmp_path)
    (tmp_path / CAPTURE).write_bytes(p.read_bytes())
    res = analyze_run(run)
    assert any("HTTP:" in w for w in res.warnings)
    assert any("Nomad RPC" in w or "yamux" in w for w in res.warnings)
