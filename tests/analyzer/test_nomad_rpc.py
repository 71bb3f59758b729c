from __future__ import annotations

import pytest

from vimprof.analyzer.decoders.nomad_rpc import (
    NomadRpcConnection,
    RpcMessage,
    RpcStats,
    go_time_ns,
    to_py,
)
from vimprof.analyzer.tcp import Connection
from vimprof.errors import VimprofError

from . import wire

CONN = Connection(7, ("10.0.0.1", 40000), ("10.0.0.2", 4647), True, 0)
ALLOC = "5d3c1a6e-0d9f-4a0a-9c3e-6a1b2c3d4e5f"


def make(conn=CONN):
    out: list[RpcMessage] = []
    stats = RpcStats()
    return NomadRpcConnection(conn, out.append, stats), out, stats


def feed_split(h, d, data: bytes, t0: int, step: int):
    for i in range(0, len(data), step):
        h.data(d, t0 + i // step, data[i : i + step])


def session_bytes():
    req = wire.rpc_request("Alloc.GetAllocs", 3, {"AllocIDs": [ALLOC], "AuthToken": "secret"})
    resp = wire.rpc_response(
        "Alloc.GetAllocs", 3, {"Allocs": [{"ID": ALLOC, "JobID": "web"}], "Index": 42}
    )
    c2s = (
        b"\x06"
        + wire.yamux(1, 1, 1, length=0)  # WindowUpdate SYN opens stream 1
        + wire.yamux(0, 0, 1, b"\x01" + req[:10])
        + wire.yamux(2, 0, 0, length=9)  # ping
        + wire.yamux(0, 0, 1, req[10:])
    )
    s2c = wire.yamux(1, 2, 1, length=0) + wire.yamux(0, 0, 1, resp)
    return c2s, s2c, len(req), len(resp)


def test_yamux_v2_request_response_split_across_segments():
    h, out, stats = make()
    c2s, s2c, _, _ = session_bytes()
    feed_split(h, 0, c2s, 1000, 5)
    feed_split(h, 1, s2c, 5000, 11)
    assert [(m.direction, m.method, m.seq, m.stream) for m in out] == [
        ("request", "Alloc.GetAllocs", 3, 1),
        ("response", "Alloc.GetAllocs", 3, 1),
    ]
    req, resp = out
    assert req.body == {"AllocIDs": [ALLOC]}  # AuthToken dropped
    assert resp.request is req and resp.error == ""
    assert resp.body["Allocs"][0]["JobID"] == "web"
    # first header byte: segment carrying offset 1 + 12 + 12 + 1 ; last body byte: end of c2s
    assert req.t_first_ns == 1000 + (1 + 12 + 12 + 1) // 5
    assert req.t_last_ns == 1000 + (len(c2s) - 1) // 5
    assert resp.t_first_ns == 5000 + 24 // 11 and resp.t_last_ns == 5000 + (len(s2c) - 1) // 11
    assert req.sender == "10.0.0.1" and resp.sender == "10.0.0.2"
    assert req.conn == CONN.tuple and stats.messages == 2


def test_interleaved_streams_and_server_initiated_stream():
    h, out, _ = make()
    r1 = wire.rpc_request("Node.GetClientAllocs", 1, {"NodeID": "n"})
    r3 = wire.rpc_request("Node.UpdateAlloc", 1, {"Alloc": []})
    s2 = wire.rpc_request("ClientStats.Stats", 9, {})
    h.data(
        0,
        1,
        b"\x06"
        + wire.yamux(1, 1, 1)
        + wire.yamux(1, 1, 3)
        + wire.yamux(0, 0, 1, b"\x01" + r1[:4])
        + wire.yamux(0, 0, 3, b"\x01" + r3)
        + wire.yamux(0, 0, 1, r1[4:]),
    )
    # server opens stream 2 towards the client: the server is the requester there
    h.data(1, 2, wire.yamux(1, 1, 2) + wire.yamux(0, 0, 2, b"\x01" + s2))
    h.data(0, 3, wire.yamux(0, 0, 2, wire.rpc_response("ClientStats.Stats", 9, {"X": 1})))
    got = [(m.method, m.direction, m.stream) for m in out]
    assert got == [
        ("Node.UpdateAlloc", "request", 3),
        ("Node.GetClientAllocs", "request", 1),
        ("ClientStats.Stats", "request", 2),
        ("ClientStats.Stats", "response", 2),
    ]
    assert out[-1].request is out[-2]


def test_plain_rpc_nomad_connection():
    h, out, _ = make()
    h.data(0, 1, b"\x01" + wire.rpc_request("Status.Ping", 1, {}))
    h.data(1, 2, wire.rpc_response("Status.Ping", 1, {}, error="boom"))
    assert [(m.direction, m.error) for m in out] == [("request", ""), ("response", "boom")]


@pytest.mark.parametrize("mode,why", [(0x04, "encrypted: cannot decode"), (0x02, "raft")])
def test_tls_and_raft_are_skipped(mode, why):
    h, out, stats = make()
    h.data(0, 1, bytes([mode]) + b"\x16\x03\x01" + b"x" * 50)
    h.data(1, 2, b"y" * 50)
    assert out == [] and any(why in k for k in stats.skipped_connections)
    if mode == 0x04:
        assert any("encrypted: cannot decode" in w for w in stats.warnings)


def test_streaming_stream_is_skipped():
    h, out, stats = make()
    h.data(0, 1, b"\x06" + wire.yamux(1, 1, 1) + wire.yamux(0, 0, 1, b"\x05\x81\xa6Method"))
    assert out == [] and stats.skipped_connections


def test_gap_resyncs_yamux_and_msgpack():
    h, out, stats = make()
    c2s, _, _, _ = session_bytes()
    h.data(0, 1, c2s[:30])
    h.gap(0, 2, 100)
    # after the hole: junk, then a clean frame carrying a whole new request on stream 5
    fresh = wire.rpc_request("Node.UpdateAlloc", 8, {"Alloc": [{"ID": ALLOC}]})
    tail = (
        wire.yamux(0, 0, 1, b"junkjunk")
        + wire.yamux(0, 0, 5, fresh)
        + wire.yamux(1, 0, 5, length=100)
    )
    h.data(0, 3, b"\x00\x07garbage" + tail)
    assert [(m.method, m.seq) for m in out] == [("Node.UpdateAlloc", 8)]
    assert stats.resyncs >= 1 and stats.garbage_bytes > 0


def test_msgpack_garbage_inside_a_stream_resyncs_on_next_header():
    h, out, stats = make()
    req = wire.rpc_request("Job.Register", 2, {"Job": {"ID": "web"}})
    h.data(0, 1, b"\x06" + wire.yamux(1, 1, 1) + wire.yamux(0, 0, 1, b"\x01\xc1\xc1junk" + req))
    assert [m.method for m in out] == ["Job.Register"]
    assert stats.lost_messages >= 1


def test_connection_without_syn_is_decoded_as_yamux():
    conn = Connection(9, ("10.0.0.1", 40000), ("10.0.0.2", 4647), False, 0)
    h, out, stats = make(conn)
    req = wire.rpc_request("Node.GetClientAllocs", 4, {"NodeID": "n"})
    # starts in the middle of a frame of stream 1, then whole frames
    h.data(0, 1, b"tail-of-previous" + wire.yamux(0, 0, 1, req) + wire.yamux(2, 0, 0, length=1))
    assert [m.method for m in out] == ["Node.GetClientAllocs"]
    assert stats.joined_midway == 1


def test_go_time_ns():
    t = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z
    assert go_time_ns(wire.go_time(t)) == t
    assert go_time_ns(wire.go_time(t, zone_min=60)) == t  # the offset does not move the instant
    # year 1 (Go's zero time)
    assert go_time_ns(b"\x01" + b"\x00" * 12 + b"\xff\xff") == -62135596800 * 1_000_000_000
    with pytest.raises(VimprofError):
        go_time_ns(b"\x01short")
    with pytest.raises(VimprofError):
        go_time_ns(b"\x07" + b"\x00" * 14)


def test_to_py_keeps_non_utf8_bytes_and_drops_secrets():
    blob = wire.go_time(1_767_225_600_000_000_000)
    got = to_py({b"StartedAt": blob, b"Name": b"web", b"SecretID": b"s", b"L": [b"a", 1]})
    assert got == {"StartedAt": blob, "Name": "web", "L": ["a", 1]}


def test_resync_also_finds_headers_in_declaration_order():
    import msgpack

    h, out, stats = make()
    old_order = msgpack.packb({"ServiceMethod": "Status.Ping", "Seq": 5}) + msgpack.packb({})
    h.data(0, 1, b"\x01" + b"\xc1" + old_order)
    assert [(m.method, m.seq) for m in out] == [("Status.Ping", 5)]
    assert stats.resyncs == 1


def test_tls_session_joined_midway_is_reported_not_decoded():
    h, out, stats = make(Connection(8, ("10.0.0.1", 40001), ("10.0.0.2", 4647), False, 0))
    c2s, s2c, _, _ = session_bytes()
    # application_data records wrapping what would otherwise decode as yamux + msgpack-rpc
    h.data(0, 1, b"\x17\x03\x03\x01\x00" + c2s[1:])
    h.data(1, 2, s2c)
    assert out == [] and stats.garbage_bytes == 0
    assert any("encrypted: cannot decode, use hooks or VIM events" in w for w in stats.warnings)
