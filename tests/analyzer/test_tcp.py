from __future__ import annotations

from vimprof.analyzer.sources.pcap import ACK, FIN, PSH, RST, SYN, Packet
from vimprof.analyzer.tcp import Connection, TcpReassembler

C = ("10.0.0.1", 40000)
S = ("10.0.0.2", 4647)


class Collect:
    def __init__(self, conn: Connection):
        self.conn = conn
        self.chunks: list[tuple[int, int, bytes]] = []
        self.gaps: list[tuple[int, int]] = []
        self.closed: list[str] = []

    def data(self, d, t, b):
        self.chunks.append((d, t, b))

    def gap(self, d, t, missing):
        self.gaps.append((d, missing))

    def close(self, t, reason):
        self.closed.append(reason)

    def stream(self, d: int) -> bytes:
        return b"".join(b for dd, _, b in self.chunks if dd == d)


def make(server_ports=(4647,)):
    handlers: list[Collect] = []

    def factory(conn):
        h = Collect(conn)
        handlers.append(h)
        return h

    return TcpReassembler(factory, server_ports=server_ports), handlers


def pkt(t, d, seq, flags=ACK | PSH, payload=b"", ack=0, wire_len=-1):
    a, b = (C, S) if d == 0 else (S, C)
    return Packet(t, a[0], a[1], b[0], b[1], seq, ack, flags, payload, wire_len >= 0, wire_len)


def handshake(r, isn_c=100, isn_s=9000):
    r.add(pkt(1, 0, isn_c, SYN))
    r.add(pkt(2, 1, isn_s, SYN | ACK, ack=isn_c + 1))
    r.add(pkt(3, 0, isn_c + 1, ACK, ack=isn_s + 1))


def test_in_order_both_directions_with_times_and_fin():
    r, hs = make()
    handshake(r)
    r.add(pkt(10, 0, 101, payload=b"hello "))
    r.add(pkt(11, 0, 107, payload=b"world"))
    r.add(pkt(12, 1, 9001, payload=b"ok"))
    r.add(pkt(13, 0, 112, FIN | ACK))
    r.add(pkt(14, 1, 9003, FIN | ACK))
    (h,) = hs
    assert h.conn.syn_seen and h.conn.client == C and h.conn.server == S
    assert h.stream(0) == b"hello world" and h.stream(1) == b"ok"
    assert [t for d, t, _ in h.chunks if d == 0] == [10, 11]
    assert h.closed == ["fin"] and not h.gaps


def test_retransmission_and_overlap_are_dropped():
    r, hs = make()
    handshake(r)
    r.add(pkt(10, 0, 101, payload=b"abcd"))
    r.add(pkt(11, 0, 101, payload=b"abcd"))  # exact retransmission
    r.add(pkt(12, 0, 103, payload=b"cdef"))  # overlaps 2 bytes
    assert hs[0].stream(0) == b"abcdef"
    assert r.retransmitted_bytes == 6
    assert [t for _, t, _ in hs[0].chunks] == [10, 12]


def test_out_of_order_is_buffered_until_the_hole_fills():
    r, hs = make()
    handshake(r)
    r.add(pkt(10, 0, 105, payload=b"EFGH"))
    r.add(pkt(11, 0, 109, payload=b"IJ"))
    assert hs[0].stream(0) == b""
    r.add(pkt(12, 0, 101, payload=b"ABCD"))
    assert hs[0].stream(0) == b"ABCDEFGHIJ"
    # each chunk keeps the time of the packet that carried it
    assert [t for _, t, _ in hs[0].chunks] == [12, 10, 11]
    assert not hs[0].gaps


def test_hole_acked_by_receiver_becomes_a_gap():
    r, hs = make()
    handshake(r)
    r.add(pkt(10, 0, 101, payload=b"ABCD"))
    r.add(pkt(11, 0, 109, payload=b"IJ"))  # 105..108 never captured
    r.add(pkt(12, 1, 9001, ACK, ack=111))  # the server got everything
    assert hs[0].gaps == [(0, 4)]
    assert hs[0].stream(0) == b"ABCDIJ"


def test_hole_at_end_of_capture_is_a_gap():
    r, hs = make()
    handshake(r)
    r.add(pkt(10, 0, 101, payload=b"AB"))
    r.add(pkt(11, 0, 200, payload=b"ZZ"))
    r.finish()
    assert hs[0].gaps == [(0, 97)] and hs[0].stream(0) == b"ABZZ"
    assert hs[0].closed == ["end of capture"]


def test_mid_stream_start_without_syn_uses_server_ports():
    r, hs = make()
    r.add(pkt(10, 1, 7777, payload=b"resp"))  # server speaks first in the capture
    r.add(pkt(11, 0, 3333, payload=b"req"))
    r.add(pkt(12, 0, 3336, payload=b"req2"))
    (h,) = hs
    assert not h.conn.syn_seen and h.conn.server == S
    assert h.stream(0) == b"reqreq2" and h.stream(1) == b"resp"


def test_sequence_wraparound():
    r, hs = make()
    isn = (1 << 32) - 3
    handshake(r, isn_c=isn)
    r.add(pkt(10, 0, (isn + 1) % (1 << 32), payload=b"abcd"))
    r.add(pkt(11, 0, (isn + 5) % (1 << 32), payload=b"efg"))
    assert hs[0].stream(0) == b"abcdefg"


def test_rst_closes_and_port_reuse_opens_a_new_connection():
    r, hs = make()
    handshake(r)
    r.add(pkt(10, 0, 101, payload=b"one"))
    r.add(pkt(11, 1, 9001, RST))
    assert hs[0].closed == ["rst"]
    handshake(r, isn_c=50_000, isn_s=70_000)
    r.add(pkt(20, 0, 50_001, payload=b"two"))
    assert len(hs) == 2 and hs[1].stream(0) == b"two"


def test_snapped_segment_leaves_a_gap_for_the_cut_tail():
    r, hs = make()
    handshake(r)
    r.add(pkt(10, 0, 101, payload=b"ABC", wire_len=10))
    r.add(pkt(11, 0, 111, payload=b"next"))
    assert hs[0].stream(0) == b"ABCnext" and hs[0].gaps == [(0, 7)]


def test_ignored_connections_get_no_handler():
    r = TcpReassembler(lambda conn: None)
    r.add(pkt(1, 0, 1, SYN))
    r.add(pkt(2, 0, 2, payload=b"x"))
    assert r.connections == 1 and r.all_connections == []


def test_idle_connections_expire_and_reopen_midway():
    r, hs = make()
    handshake(r)
    r.add(pkt(10, 0, 101, payload=b"abc"))
    r.idle_timeout_ns = 100
    assert r.expire(50) == 0 and hs[0].closed == []
    assert r.expire(200) == 1 and hs[0].closed == ["idle"]
    # the same tuple talks again: a new connection, joined midway (no SYN)
    r.add(pkt(300, 0, 104, payload=b"def"))
    assert len(hs) == 2 and not hs[1].conn.syn_seen and hs[1].stream(0) == b"def"
    assert r.expired == 1
