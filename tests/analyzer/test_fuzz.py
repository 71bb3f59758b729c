"""Property tests: arbitrary bytes never make a decoder raise anything but VimprofError."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vimprof.analyzer.decoders.http import HttpConnection
from vimprof.analyzer.decoders.nomad_rpc import NomadRpcConnection, RpcStats
from vimprof.analyzer.pipeline import decode_capture
from vimprof.analyzer.sources.pcap import PcapReader
from vimprof.analyzer.tcp import Connection
from vimprof.errors import VimprofError

from . import wire

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

HEADERS = [
    b"",
    struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1),
    struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 276),
    wire.pcapng([], linktype=1),
    wire.pcapng([], linktype=113, endian=">"),
]

# pieces that steer random bytes towards the interesting paths
HTTP_BITS = [
    b"GET / HTTP/1.1\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"Content-Length: 5\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"\r\n",
    b"5\r\n",
    b"0\r\n\r\n",
    b"ffffffff\r\n",
]
RPC_BITS = [
    b"\x06",
    b"\x01",
    wire.yamux(1, 1, 1),
    wire.yamux(0, 0, 1, length=20),
    wire.rpc_request("Node.UpdateAlloc", 1, {"Alloc": [{"ID": "x"}]}),
    wire.rpc_response("Alloc.GetAllocs", 1, {"Allocs": []}),
    b"\x82\xadServiceMethod",
    b"\xdb\xff\xff\xff\xff",
    b"\xdf\x7f\xff\xff\xff",
]


def chunks(bits):
    return st.lists(st.one_of(st.binary(max_size=64), st.sampled_from(bits)), max_size=20)


@SETTINGS
@given(head=st.sampled_from(HEADERS), body=st.binary(max_size=600))
def test_pcap_reader_never_raises_other_errors(tmp_path, head, body):
    p = tmp_path / "f.pcap"
    p.write_bytes(head + body)
    try:
        with PcapReader(p) as r:
            n = sum(1 for _ in r)
        assert n == r.packets
        decode_capture(p)
    except VimprofError:
        pass


CONN = Connection(1, ("10.0.0.1", 1), ("10.0.0.2", 4646), True, 0)


@SETTINGS
@given(ops=st.lists(st.tuples(st.integers(0, 1), st.booleans(), chunks(HTTP_BITS)), max_size=10))
def test_http_parser_never_raises(ops):
    out = []
    h = HttpConnection(CONN, out.append)
    for t, (d, gap, parts) in enumerate(ops):
        if gap:
            h.gap(d, t, 3)
        h.data(d, t, b"".join(parts))
    h.close(99, "fin")
    for m in out:
        assert m.kind in ("request", "response")
        assert not set(m.headers) & {"authorization", "cookie", "x-nomad-token"}


@SETTINGS
@given(
    syn=st.booleans(),
    ops=st.lists(st.tuples(st.integers(0, 1), st.booleans(), chunks(RPC_BITS)), max_size=10),
)
def test_rpc_decoder_never_raises(syn, ops):
    conn = Connection(1, ("10.0.0.1", 1), ("10.0.0.2", 4647), syn, 0)
    out = []
    h = NomadRpcConnection(conn, out.append, RpcStats())
    for t, (d, gap, parts) in enumerate(ops):
        if gap:
            h.gap(d, t, 5)
        data = b"".join(parts)
        if data:
            h.data(d, t, data)
    h.close(99, "fin")
    for m in out:
        assert m.direction in ("request", "response")


@SETTINGS
@given(
    cut=st.integers(0, 4000),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=8),
)
def test_damaged_real_shaped_capture_never_raises_other_errors(tmp_path, cut, flips):
    from .test_analyze import synthetic_capture

    data = bytearray(synthetic_capture())
    for pos, val in flips:
        if pos < len(data):
            data[pos] = val
    p = tmp_path / "d.pcap"
    p.write_bytes(bytes(data[: max(len(data) - cut, 0)]))
    try:
        from vimprof.analyzer import analyze_capture

        for tl in analyze_capture(p):
            assert tl["vim"] == "nomad"
    except VimprofError:
        pass


AMQP_BITS = [
    wire.AMQP_HEADER,
    wire.amqp_frame(8, 0, b""),
    wire.amqp_publish(1, "nova", "compute.h"),
    wire.amqp_deliver(1, "", "reply_x"),
    wire.amqp_content(1, wire.oslo_body({"method": "object_action", "_msg_id": "m",
                                         "args": {"objinst": {"nova_object.name": "Instance",
                                                              "nova_object.data": {}}}})),
    struct.pack(">HHQH", 60, 0, 10**12, 0xFFFF),
    b"\x02\x00\x01\x00\x00\x00\x0e",
    b"\x03\x00\x01\xff\xff\xff\xff",
    b"\xce",
]


@settings(SETTINGS, max_examples=150)
@given(
    syn=st.booleans(),
    ops=st.lists(st.tuples(st.integers(0, 1), st.booleans(), chunks(AMQP_BITS)), max_size=10),
)
def test_amqp_decoder_never_raises(syn, ops):
    from vimprof.analyzer.builders.nova_phases import NovaTimelines
    from vimprof.analyzer.decoders.amqp import AmqpConnection, AmqpStats

    conn = Connection(1, ("10.0.0.1", 1), ("10.0.0.2", 5672), syn, 0)
    out = []
    h = AmqpConnection(conn, out.append, AmqpStats())
    for t, (d, gap, parts) in enumerate(ops):
        if gap:
            h.gap(d, t, 5)
        data = b"".join(parts)
        if data:
            h.data(d, t, data)
    h.close(99, "fin")
    nova = NovaTimelines()
    for m in out:
        assert m.kind in ("publish", "deliver", "return", "get-ok")
        nova.add_amqp(m)
    for tl in nova.timelines():
        assert tl["vim"] == "nova"


OSLO_BITS = [
    b'{"oslo.message": "', b'{"method": "select_destinations", "_msg_id": "m", "args": ',
    b'{"instance_uuids": ["8d9a1b6e-3c2f-4e5a-9b7c-0d1e2f3a4b5c"]}', b'"result": [[]]',
    b'{"nova_object.name": "Instance", "nova_object.data": {"uuid": 1}}', b"}", b"]", b",",
    b'"ending": true', b'"_context_auth_token": "x"', b"null", b"[", b"{",
]


@settings(SETTINGS, max_examples=100)
@given(parts=chunks(OSLO_BITS))
def test_oslo_decoder_never_raises_and_drops_tokens(parts):
    from vimprof.analyzer.decoders.oslo import OsloMessage, decode_body, instance_uuids

    for method in ("select_destinations", "object_action", "schedule_and_build_instances",
                   "update_instance_info", "object_class_action_versions"):
        om = decode_body(b"".join(parts))
        if om is None:
            continue
        om.method = method
        assert isinstance(instance_uuids(om), list)
        assert isinstance(om, OsloMessage)
        assert "_context_auth_token" not in str(om.args)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.sampled_from(["8d9a1b6e-3c2f-4e5a-9b7c-0d1e2f3a4b5c", "Instance", "InstanceList"]),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.sampled_from(["nova_object.name", "nova_object.data", "nova_object.changes", "uuid",
                         "instance_uuid", "objects", "vm_state", "task_state", "x"]),
        kids, max_size=4),
    max_leaves=20,
)
ARG_KEYS = ["request_specs", "build_requests", "instance_uuids", "spec_obj", "instance",
            "objinst", "objmethod", "instance_info", "instance_uuid", "args", "kwargs", "node"]


@settings(SETTINGS, max_examples=100)
@given(
    method=st.sampled_from(["select_destinations", "object_action", "build_and_run_instance",
                            "schedule_and_build_instances", "update_instance_info",
                            "delete_instance_info", "object_class_action_versions",
                            "terminate_instance", ""]),
    args=st.dictionaries(st.sampled_from(ARG_KEYS), JSON, max_size=5),
    extra=st.dictionaries(st.sampled_from(["_msg_id", "result", "failure", "ending",
                                           "_unique_id", "event_type"]), JSON, max_size=3),
)
def test_nova_timelines_never_raise_on_odd_rpc_shapes(method, args, extra):
    import json

    from vimprof.analyzer.builders.nova_phases import NovaTimelines
    from vimprof.analyzer.decoders.amqp import AmqpMessage

    inner = dict(extra, method=method, args=args)
    body = wire.oslo_body(inner)
    nova = NovaTimelines()
    for kind in ("publish", "deliver"):
        nova.add_amqp(AmqpMessage(kind, "nova", "k", 1, 2, body=body, body_size=len(body)))
    for tl in nova.timelines():
        json.dumps(tl)


@settings(SETTINGS, max_examples=60)
@given(
    cut=st.integers(0, 6000),
    flips=st.lists(st.tuples(st.integers(0, 12000), st.integers(0, 255)), max_size=8),
)
def test_damaged_nova_capture_never_raises_other_errors(tmp_path, cut, flips):
    from vimprof.analyzer import analyze_capture

    from .test_nova import TOKEN, boot_and_delete

    data = bytearray(boot_and_delete())
    for pos, val in flips:
        if pos < len(data):
            data[pos] = val
    p = tmp_path / "n.pcap"
    p.write_bytes(bytes(data[: max(len(data) - cut, 0)]))
    try:
        tls = analyze_capture(p)
    except VimprofError:
        return
    for tl in tls:
        assert tl["vim"] in ("nova", "nomad")
        assert TOKEN not in str(tl)
