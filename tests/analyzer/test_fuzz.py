"""Property tests: arbitrary bytes never make a decoder raise anything but VimprofError."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vimprof.analyzer.analyze import decode_capture
from vimprof.analyzer.http import HttpConnection
from vimprof.analyzer.nomad_rpc import NomadRpcConnection, RpcStats
from vimprof.analyzer.pcap import PcapReader
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
