"""TCP reassembly: per connection (4-tuple) and per direction, packets -> ordered byte chunks.

Feed `sources.pcap.Packet`s in capture order to `TcpReassembler.add`. For each new connection
it asks the `factory` for a `StreamHandler`, then calls on it:

- `data(direction, t_ns, data)`: the next in-order bytes of one direction; `t_ns` (ns since
  epoch) is the capture time of the packet that carried them, so a decoder knows when the
  first and the last byte of a message crossed the capture point;
- `gap(direction, t_ns, missing)`: `missing` bytes (>= 1, or -1 when unknown) of the direction
  were never captured; the bytes delivered next follow the hole, so the decoder must resync
  or drop what it was parsing;
- `close(t_ns, reason)`: once, when the connection ends ("fin", "rst", "end of capture",
  "reused", "idle": no packet for `idle_timeout_ns`, see `expire`).

direction 0 = client to server, 1 = server to client. The client is the side that sent the SYN;
when the capture starts mid-connection (no SYN), the side whose port is in `server_ports` is
the server (else the lower port is). Without a SYN a direction starts at its first captured
sequence number.

Handled: retransmissions and overlaps (data already delivered is dropped), out-of-order segments
(buffered until the hole fills), holes that never fill (declared as gaps when the receiver
acknowledges past them, when more than `max_buffered` bytes wait, at FIN/RST, or at the end),
SYN/FIN/RST, sequence wrap-around, port reuse (a SYN with a new ISN opens a new connection).
Source of the rules: RFC 9293 (sequence space, SYN and FIN each take one sequence number).

Analyzer stage 2, tcp (vimprof/analyzer/__init__.py): `Packet`s from sources/ in, byte
chunks per connection and direction out, to the decoders/ the pipeline's factory picks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from vimprof.analyzer.sources.pcap import ACK, FIN, RST, SYN, Packet

MOD = 1 << 32
HALF = 1 << 31

Endpoint = tuple[str, int]


class StreamHandler(Protocol):
    """What a protocol decoder implements to receive one connection's bytes."""

    def data(self, direction: int, t_ns: int, data: bytes) -> None: ...

    def gap(self, direction: int, t_ns: int, missing: int) -> None: ...

    def close(self, t_ns: int, reason: str) -> None: ...


@dataclass
class Connection:
    """One TCP connection as seen in the capture.

    `client`/`server` are (ip, port); `syn_seen` tells whether its start is in the capture
    (decoders that expect a first byte, like Nomad's RPC mode byte, need it); `id` numbers
    connections in order of appearance.
    """

    id: int
    client: Endpoint
    server: Endpoint
    syn_seen: bool
    t_first_ns: int
    t_last_ns: int = 0
    packets: int = 0
    gaps: int = 0
    retransmitted_bytes: int = 0

    @property
    def tuple(self) -> tuple[str, int, str, int]:
        """(client ip, client port, server ip, server port)."""
        return (self.client[0], self.client[1], self.server[0], self.server[1])


@dataclass(slots=True)
class _Half:
    """One direction's state: the next expected absolute sequence and out-of-order segments."""

    next: int | None = None  # absolute offset (unwrapped) of the next byte to deliver
    next_raw: int = 0  # the same, modulo 2**32
    isn: int | None = None
    fin_at: int | None = None
    finished: bool = False
    pending: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # start -> (t, data)
    pending_bytes: int = 0

    def absolute(self, seq: int) -> int:
        assert self.next is not None
        diff = ((seq - self.next_raw + HALF) % MOD) - HALF
        return self.next + diff


class _Conn:
    __slots__ = ("info", "handler", "halves", "closed")

    def __init__(self, info: Connection, handler: StreamHandler):
        self.info = info
        self.handler = handler
        self.halves = (_Half(), _Half())
        self.closed = False


class _Closed:
    def data(self, direction: int, t_ns: int, data: bytes) -> None:
        pass

    def gap(self, direction: int, t_ns: int, missing: int) -> None:
        pass

    def close(self, t_ns: int, reason: str) -> None:
        pass


_CLOSED = _Closed()


class TcpReassembler:
    """Reassemble TCP connections; see the module docstring for the callbacks.

    `factory(conn)` returns the handler of a new connection, or None to ignore it (its
    packets are then dropped cheaply). `server_ports` helps orient connections whose SYN is
    not in the capture. Counters: `connections` (all seen), `vim_connections` (with a
    handler), `gaps`, `retransmitted_bytes`; `all_connections` lists the handled ones'
    `Connection` records unless `keep_connections` is false (long captures). A closed
    connection keeps only a tombstone (its handler is released).
    """

    def __init__(
        self,
        factory: Callable[[Connection], StreamHandler | None],
        server_ports: Iterable[int] = (),
        max_buffered: int = 4 * 1024 * 1024,
        keep_connections: bool = True,
        idle_timeout_ns: int = 600 * 1_000_000_000,
    ):
        self.factory = factory
        self.server_ports = frozenset(server_ports)
        self.max_buffered = max_buffered
        self._conns: dict[tuple[str, int, str, int], _Conn | None] = {}
        # (src, sport, dst, dport) of either direction -> (connection, direction): the
        # handled connections of _conns, for the per-packet fast paths
        self._dirs: dict[tuple[str, int, str, int], tuple[_Conn, int]] = {}
        self.connections = 0
        self.gaps = 0
        self.retransmitted_bytes = 0
        self.idle_timeout_ns = idle_timeout_ns
        self.expired = 0
        self.vim_connections = 0  # connections a handler was made for
        self.keep_connections = keep_connections
        self.all_connections: list[Connection] = []  # only with keep_connections

    # -- public ----------------------------------------------------------------------------

    def add(self, pkt: Packet) -> None:
        """Process one captured TCP segment (packets must come in capture order)."""
        hit = self._dirs.get(pkt[1:5])  # (src, sport, dst, dport)
        flags = pkt.flags
        if hit is not None and not flags & 0x07:
            # Fast path (most segments): the next in-order bytes, nothing buffered, no
            # SYN/FIN/RST, whole payload. Same effect as the general path below.
            conn, d = hit
            half = conn.halves[d]
            payload = pkt.payload
            if (
                pkt.seq == half.next_raw
                and not conn.closed
                and half.next is not None
                and not half.pending
                and half.fin_at is None
                and not half.finished
                and pkt.wire_len == len(payload)
            ):
                info = conn.info
                info.packets += 1
                t_ns = pkt.t_ns
                info.t_last_ns = t_ns
                if payload:
                    n = len(payload)
                    half.next += n
                    half.next_raw = (half.next_raw + n) % MOD
                    conn.handler.data(d, t_ns, payload)
                if flags & ACK and not conn.closed and conn.halves[1 - d].pending:
                    self._acked(conn, 1 - d, pkt.ack, t_ns)
                return
        fwd = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
        rev = (pkt.dst, pkt.dport, pkt.src, pkt.sport)
        key = fwd if fwd <= rev else rev
        conn = self._conns.get(key, False)
        if conn is not False and conn is not None and flags & SYN:
            # A SYN on a known tuple: same handshake (retransmitted SYN/SYN-ACK) or port reuse.
            d = self._direction(conn, pkt)
            half = conn.halves[d]
            if (
                conn.closed
                or (half.isn is not None and half.isn != pkt.seq)
                or (half.isn is None and half.next is not None)
            ):
                if not conn.closed:
                    self._close(conn, pkt.t_ns, "reused")
                conn = False
        if conn is False:
            conn = self._open(key, pkt)
        if conn is None:
            return
        if conn.closed:
            return
        conn.info.packets += 1
        conn.info.t_last_ns = pkt.t_ns
        d = self._direction(conn, pkt)
        half = conn.halves[d]
        if flags & SYN:
            if half.next is None:
                half.isn = pkt.seq
                half.next = 0
                half.next_raw = (pkt.seq + 1) % MOD
            start = half.absolute((pkt.seq + 1) % MOD)  # payload on a SYN follows the SYN
        else:
            if half.next is None:
                half.next = 0
                half.next_raw = pkt.seq
            start = half.absolute(pkt.seq)
        wire_len = pkt.wire_len if pkt.wire_len >= 0 else len(pkt.payload)
        if pkt.payload or wire_len:
            self._segment(conn, d, start, pkt.t_ns, pkt.payload, wire_len)
        if flags & FIN:
            fin = start + wire_len
            if half.fin_at is None or fin < half.fin_at:
                half.fin_at = fin
            self._check_fin(conn, d, pkt.t_ns)
        if flags & ACK and not conn.closed:
            self._acked(conn, 1 - d, pkt.ack, pkt.t_ns)
        if flags & RST and not conn.closed:
            for dd in (0, 1):
                self._flush(conn, dd, pkt.t_ns)
            self._close(conn, pkt.t_ns, "rst")

    def add_ack(self, pkt: Packet) -> None:
        """Process a pure ACK (no payload, flags exactly ACK): `add`'s result, faster."""
        hit = self._dirs.get(pkt[1:5])
        if hit is None:
            return  # ignored (an unknown tuple opens on its first data segment)
        conn, d = hit
        if conn.closed:
            return
        info = conn.info
        info.packets += 1
        info.t_last_ns = pkt.t_ns
        if conn.halves[1 - d].pending:
            self._acked(conn, 1 - d, pkt.ack, pkt.t_ns)

    def run(
        self, packets: Iterable[Packet], ports: Iterable[int], expire_every: int = 0x4000
    ) -> int:
        """Feed `packets` (capture order) whose source or destination port is in `ports`
        to `add` (pure ACKs to `add_ack`); others are skipped. Calls `expire(t_ns)` every
        `expire_every` packets (all packets count). Returns the last packet's t_ns (0 if
        there was none). The analyzer's packet loop."""
        ports = frozenset(ports)
        add = self.add
        add_ack = self.add_ack
        every = max(int(expire_every), 1)
        n = 0
        pkt = None
        for pkt in packets:
            # by index (faster than the names): 2 sport, 4 dport, 7 flags, 8 payload, 0 t_ns
            if pkt[2] in ports or pkt[4] in ports:
                if pkt[8] or pkt[7] != ACK:
                    add(pkt)
                else:
                    add_ack(pkt)  # a pure ACK
            n += 1
            if n == every:
                n = 0
                self.expire(pkt[0])
        return 0 if pkt is None else pkt[0]

    def expire(self, now_ns: int) -> int:
        """Close (reason "idle") and forget connections without a packet for more than
        `idle_timeout_ns` before `now_ns` (capture time); forget old tombstones too. A later
        packet of such a tuple opens a new connection joined midway. Returns how many.

        Keeps memory bounded on long captures. The default, 10 minutes, is above Nomad's
        longest blocking query (5 min + jitter); the caller decides how often to call it.
        """
        limit = now_ns - self.idle_timeout_ns
        dead = [
            k for k, c in self._conns.items() if c is not None and c.info.t_last_ns < limit
        ]
        for key in dead:
            conn = self._conns.pop(key)
            assert conn is not None
            self._undir(key)
            if not conn.closed:
                for d in (0, 1):
                    self._flush(conn, d, now_ns)
                self._close(conn, now_ns, "idle")
                self.expired += 1
        return len(dead)

    def finish(self, t_ns: int | None = None) -> None:
        """End of capture: declare the remaining holes as gaps and close every connection."""
        for conn in list(self._conns.values()):
            if conn is None or conn.closed:
                continue
            t = t_ns if t_ns is not None else conn.info.t_last_ns
            for d in (0, 1):
                self._flush(conn, d, t)
            self._close(conn, t, "end of capture")

    # -- internals -------------------------------------------------------------------------

    def _open(self, key: tuple[str, int, str, int], pkt: Packet) -> _Conn | None:
        a = (pkt.src, pkt.sport)
        b = (pkt.dst, pkt.dport)
        syn = bool(pkt.flags & SYN)
        if syn:
            client, server = (a, b) if not pkt.flags & ACK else (b, a)
        elif pkt.dport in self.server_ports and pkt.sport not in self.server_ports:
            client, server = a, b
        elif pkt.sport in self.server_ports and pkt.dport not in self.server_ports:
            client, server = b, a
        else:
            client, server = (a, b) if pkt.sport >= pkt.dport else (b, a)
        self.connections += 1
        info = Connection(self.connections, client, server, syn, pkt.t_ns)
        handler = self.factory(info)
        if handler is None:
            self._conns[key] = None
            self._undir(key)
            return None
        self.vim_connections += 1
        if self.keep_connections:
            self.all_connections.append(info)
        conn = _Conn(info, handler)
        self._conns[key] = conn
        self._dirs[server + client] = (conn, 1)
        self._dirs[client + server] = (conn, 0)  # second: a self-connection is direction 0
        return conn

    def _undir(self, key: tuple[str, int, str, int]) -> None:
        self._dirs.pop(key, None)
        self._dirs.pop((key[2], key[3], key[0], key[1]), None)

    @staticmethod
    def _direction(conn: _Conn, pkt: Packet) -> int:
        return 0 if (pkt.src, pkt.sport) == conn.info.client else 1

    def _segment(
        self, conn: _Conn, d: int, start: int, t_ns: int, data: bytes, wire_len: int
    ) -> None:
        half = conn.halves[d]
        assert half.next is not None
        if half.finished:
            return
        if len(data) < wire_len:
            # Snaplen cut the segment: the captured head is data, the tail is a known hole.
            self._segment(conn, d, start, t_ns, data, len(data))
            self._hole(conn, d, start + len(data), start + wire_len, t_ns)
            return
        end = start + len(data)
        if end <= half.next:
            self._count_retrans(conn, len(data))
            return
        if start < half.next:
            self._count_retrans(conn, half.next - start)
            data = data[half.next - start :]
            start = half.next
        if start == half.next:
            self._deliver(conn, d, t_ns, data)
            self._drain(conn, d)
        else:
            old = half.pending.get(start)
            if old is None or len(old[1]) < len(data):
                if old is not None:
                    half.pending_bytes -= len(old[1])
                half.pending[start] = (t_ns, data)
                half.pending_bytes += len(data)
            else:
                self._count_retrans(conn, len(data))
            if half.pending_bytes > self.max_buffered:
                self._skip_to_pending(conn, d, t_ns)
        self._check_fin(conn, d, t_ns)

    def _hole(self, conn: _Conn, d: int, start: int, end: int, t_ns: int) -> None:
        """Bytes [start, end) are known to be lost (snaplen): skip them if they are next."""
        half = conn.halves[d]
        assert half.next is not None
        if end <= half.next:
            return
        if start <= half.next:
            missing = end - half.next
            self._advance(half, missing)
            self._gap(conn, d, t_ns, missing)
            self._drain(conn, d)

    def _count_retrans(self, conn: _Conn, n: int) -> None:
        conn.info.retransmitted_bytes += n
        self.retransmitted_bytes += n

    @staticmethod
    def _advance(half: _Half, n: int) -> None:
        assert half.next is not None
        half.next += n
        half.next_raw = (half.next_raw + n) % MOD

    def _deliver(self, conn: _Conn, d: int, t_ns: int, data: bytes) -> None:
        half = conn.halves[d]
        if half.fin_at is not None and half.next is not None:
            room = half.fin_at - half.next
            if room < len(data):
                data = data[: max(room, 0)]
        if not data:
            return
        self._advance(half, len(data))
        conn.handler.data(d, t_ns, data)

    def _drain(self, conn: _Conn, d: int) -> None:
        half = conn.halves[d]
        while half.pending:
            assert half.next is not None
            start = min(half.pending)
            if start > half.next:
                return
            t, data = half.pending.pop(start)
            half.pending_bytes -= len(data)
            end = start + len(data)
            if end <= half.next:
                self._count_retrans(conn, len(data))
                continue
            self._deliver(conn, d, t, data[half.next - start :])

    def _skip_to_pending(self, conn: _Conn, d: int, t_ns: int) -> None:
        """Give up on the hole before the first buffered segment: declare it a gap."""
        half = conn.halves[d]
        if not half.pending:
            return
        assert half.next is not None
        start = min(half.pending)
        missing = start - half.next
        if missing > 0:
            self._advance(half, missing)
            self._gap(conn, d, t_ns, missing)
        self._drain(conn, d)

    def _gap(self, conn: _Conn, d: int, t_ns: int, missing: int) -> None:
        conn.info.gaps += 1
        self.gaps += 1
        conn.handler.gap(d, t_ns, missing)

    def _acked(self, conn: _Conn, d: int, ack: int, t_ns: int) -> None:
        """The peer acknowledged up to `ack` in direction d: holes before it will never fill."""
        half = conn.halves[d]
        if half.next is None or not half.pending:
            return
        acked = half.absolute(ack)
        while half.pending and acked > half.next:
            start = min(half.pending)
            if start > half.next and start <= acked:
                self._skip_to_pending(conn, d, t_ns)
            else:
                break
        self._check_fin(conn, d, t_ns)

    def _flush(self, conn: _Conn, d: int, t_ns: int) -> None:
        half = conn.halves[d]
        while half.pending:
            self._skip_to_pending(conn, d, t_ns)
        if (
            half.fin_at is not None
            and half.next is not None
            and half.next < half.fin_at
            and not half.finished
        ):
            missing = half.fin_at - half.next
            self._advance(half, missing)
            self._gap(conn, d, t_ns, missing)
        self._check_fin(conn, d, t_ns)

    def _check_fin(self, conn: _Conn, d: int, t_ns: int) -> None:
        half = conn.halves[d]
        if half.finished or half.fin_at is None or half.next is None:
            return
        if half.next >= half.fin_at:
            half.finished = True
            half.pending.clear()
            half.pending_bytes = 0
            if conn.halves[1 - d].finished:
                self._close(conn, t_ns, "fin")

    def _close(self, conn: _Conn, t_ns: int, reason: str) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.handler.close(t_ns, reason)
        # keep a light tombstone (late retransmissions are dropped, a SYN opens anew)
        conn.handler = _CLOSED
        for h in conn.halves:
            h.pending.clear()
