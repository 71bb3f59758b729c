"""Property tests: TCP reassembly gives the same byte streams whatever the delivery order,
duplication and re-segmentation of the captured segments (RFC 9293 sequence space)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vimprof.analyzer.sources.pcap import FIN, PSH, SYN
from vimprof.analyzer.tcp import TcpReassembler

from .test_tcp import Collect, pkt

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _segments(data: bytes, cuts: list[int], isn: int) -> list[tuple[int, bytes]]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    pairs = zip(points, points[1:], strict=False)
    return [((isn + 1 + a) % (1 << 32), data[a:b]) for a, b in pairs if b > a]


@st.composite
def deliveries(draw):
    streams = [draw(st.binary(min_size=1, max_size=300)) for _ in range(2)]
    isns = [draw(st.integers(0, (1 << 32) - 1)) for _ in range(2)]
    packets = []
    for d in (0, 1):
        # the same bytes cut two different ways: the first cutting is sent in full (every
        # byte arrives), a random part of the second one overlaps it (retransmissions)
        first = _segments(streams[d], draw(st.lists(st.integers(0, 400), max_size=8)), isns[d])
        packets += [(d, seq, data) for seq, data in first]
        second = _segments(streams[d], draw(st.lists(st.integers(0, 400), max_size=8)), isns[d])
        keep = draw(st.lists(st.booleans(), min_size=len(second), max_size=len(second)))
        packets += [(d, seq, data) for (seq, data), k in zip(second, keep, strict=True) if k]
    order = draw(st.permutations(range(len(packets))))
    dups = draw(st.lists(st.integers(0, len(packets) - 1), max_size=5))
    seq_order = [packets[i] for i in order] + [packets[i] for i in dups]
    fin_at = draw(st.integers(0, len(seq_order)))
    return streams, isns, seq_order, fin_at


def _run(streams, isns, packets, fin_at):
    handlers: list[Collect] = []

    def factory(conn):
        handlers.append(Collect(conn))
        return handlers[-1]

    r = TcpReassembler(factory, server_ports=(4647,))
    r.add(pkt(1, 0, isns[0], SYN))
    r.add(pkt(2, 1, isns[1], SYN))
    t = 3
    fins = [pkt(0, d, (isns[d] + 1 + len(streams[d])) % (1 << 32), FIN) for d in (0, 1)]
    for i, (d, seq, data) in enumerate(packets):
        if i == fin_at:
            for f in fins:
                r.add(f._replace(t_ns=t))
        r.add(pkt(t, d, seq, PSH, data))
        t += 1
    if fin_at >= len(packets):
        for f in fins:
            r.add(f._replace(t_ns=t))
    r.finish(t + 1)
    return handlers


@SETTINGS
@given(deliveries())
def test_any_order_and_duplication_reassembles_identically(case):
    streams, isns, packets, fin_at = case
    handlers = _run(streams, isns, packets, fin_at)
    assert len(handlers) == 1
    h = handlers[0]
    assert h.stream(0) == streams[0] and h.stream(1) == streams[1]
    assert h.gaps == [] and h.closed == ["fin"]


@SETTINGS
@given(deliveries(), st.data())
def test_a_lost_segment_is_one_gap_and_the_rest_is_intact(case, data):
    streams, isns, packets, _ = case
    # lose every copy of one byte range of direction 0 that is not at its end
    s0 = streams[0]
    if len(s0) < 3:
        return
    lo = data.draw(st.integers(0, len(s0) - 2))
    hi = data.draw(st.integers(lo + 1, len(s0) - 1))
    kept = []
    for d, seq, payload in packets:
        if d == 0:
            a = (seq - isns[0] - 1) % (1 << 32)
            b = a + len(payload)
            if a < hi and b > lo:
                # keep only the parts outside [lo, hi)
                if a < lo:
                    kept.append((d, seq, payload[: lo - a]))
                if b > hi:
                    kept.append((d, (isns[0] + 1 + hi) % (1 << 32), payload[hi - a :]))
                continue
        kept.append((d, seq, payload))
    handlers = _run(streams, isns, kept, len(kept))
    h = handlers[0]
    assert h.stream(1) == streams[1]
    assert h.stream(0) == s0[:lo] + s0[hi:]
    assert h.gaps == [(0, hi - lo)]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.data())
def test_captures_split_across_files_with_clock_offsets_merge_back(tmp_path_factory, data):
    from vimprof.analyzer.sources.merge import MergedReader
    from vimprof.analyzer.sources.pcap import PcapReader

    from . import wire

    recs = [(1_700_000_000_000_000_000 + i * 1000, wire.eth(wire.ipv4(
        "10.0.0.1", "10.0.0.2", wire.tcp(40000 + i % 3, 4647, i, payload=bytes([i % 256]))
    ))) for i in range(data.draw(st.integers(1, 60)))]
    k = data.draw(st.integers(1, 4))
    owner = [data.draw(st.integers(0, k - 1)) for _ in recs]
    # whole microseconds: a microsecond pcap cannot hold finer clock corrections
    offsets = [1000 * data.draw(st.integers(-10**6, 10**6)) for _ in range(k)]
    d = tmp_path_factory.mktemp("m")
    sources = []
    for f in range(k):
        mine = [(t - offsets[f], fr) for (t, fr), o in zip(recs, owner, strict=True) if o == f]
        p = d / f"c{f}.pcap"
        p.write_bytes(wire.pcap(mine, nano=data.draw(st.booleans())) if mine else wire.pcap([]))
        sources.append((p, offsets[f]))
    merged = list(MergedReader(sources))
    src = d / "all.pcap"
    src.write_bytes(wire.pcap(recs, nano=True))
    with PcapReader(src) as r:
        assert merged == list(r)
