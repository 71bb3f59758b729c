"""AMQP 0-9-1 decoder (RabbitMQ, port 5672) for reassembled TCP connections.

Wire facts (AMQP 0-9-1 specification, section 4.2 "Protocol and framing"; class/method ids
from amqp0-9-1.xml; shared/design/nova-internals.md section 1):
- the client opens with the protocol header `AMQP\\x00\\x00\\x09\\x01`;
- a frame is type u8 (1 method, 2 content header, 3 content body, 8 heartbeat), channel u16,
  size u32, `size` payload bytes, frame-end 0xCE (all integers big-endian);
- method payload: class u16, method u16, arguments. basic.publish (60,40): reserved u16,
  exchange shortstr, routing-key shortstr, bits u8. basic.deliver (60,60): consumer-tag
  shortstr, delivery-tag u64, redelivered u8, exchange, routing-key. basic.return (60,50):
  reply-code u16, reply-text shortstr, exchange, routing-key. basic.get-ok (60,71):
  delivery-tag u64, redelivered u8, exchange, routing-key, message-count u32;
- content header payload: class u16, weight u16, body size u64, property flags u16 (bit 0
  set: another flags word follows), then the present properties in flag order: content_type
  shortstr (0x8000), content_encoding shortstr, headers table, delivery_mode u8, priority u8,
  correlation_id shortstr, reply_to shortstr, expiration shortstr, message_id shortstr,
  timestamp u64, type shortstr, user_id shortstr, app_id shortstr, cluster_id shortstr;
- content body frames follow until `body size` bytes have arrived.

`AmqpConnection` is a `tcp.StreamHandler`; each message with content (publish, deliver,
return, get-ok) goes to `on_message` as an `AmqpMessage`. Header tables are skipped (their
size is known), never decoded. TLS (5671, or TLS on 5672) is detected and the connection is
skipped ("encrypted: cannot decode, use hooks or VIM events"). After a gap or bytes that are
not frames, the decoder drops the message in flight on that direction and resyncs on a chain
of plausible frames; nothing raises on bad input.

Analyzer stage 3, decoders (vimprof/analyzer/__init__.py): byte chunks of a connection in
(tcp.StreamHandler), `AmqpMessage`s out.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vimprof.analyzer.decoders.timemap import TimeMap
from vimprof.analyzer.decoders.tls import ENCRYPTED, looks_like_tls
from vimprof.analyzer.tcp import Connection

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
MAX_FRAME = 1 << 20  # RabbitMQ's frame_max default is 128 KiB; far above is not a frame
BODY_LIMIT = 4 * 1024 * 1024  # body bytes kept per message

BASIC = 60
PUBLISH, RETURN, DELIVER, GET_OK = 40, 50, 60, 71
KINDS = {PUBLISH: "publish", RETURN: "return", DELIVER: "deliver", GET_OK: "get-ok"}

_FRAME = struct.Struct(">BHI")
_PROPS = (
    (0x8000, "content_type", "s"),
    (0x4000, "content_encoding", "s"),
    (0x2000, "headers", "t"),
    (0x1000, "delivery_mode", "B"),
    (0x0800, "priority", "B"),
    (0x0400, "correlation_id", "s"),
    (0x0200, "reply_to", "s"),
    (0x0100, "expiration", "s"),
    (0x0080, "message_id", "s"),
    (0x0040, "timestamp", "Q"),
    (0x0020, "type", "s"),
    (0x0010, "user_id", "s"),
    (0x0008, "app_id", "s"),
    (0x0004, "cluster_id", "s"),
)


class FrameError(ValueError):
    """A frame whose content does not parse (internal: triggers a resync)."""


@dataclass
class AmqpMessage:
    """One AMQP message with content, as it crossed the capture point.

    kind: "publish" (client -> broker) | "deliver" | "return" | "get-ok" (broker -> client);
    exchange, routing_key: from the method; consumer_tag (deliver only); properties: the
    content header properties present (str/int values; "headers" is the table's size only,
    as {"size": n}); body: up to BODY_LIMIT bytes, body_size: size announced;
    complete: false when a capture gap cut the content; t_first_ns / t_last_ns: capture
    times (ns since epoch) of the method frame's first byte and the last body byte;
    conn: (client ip, client port, server ip, server port); channel; sender: IP of the
    side that sent it; received: body bytes that arrived.
    """

    kind: str
    exchange: str
    routing_key: str
    t_first_ns: int
    t_last_ns: int = 0
    consumer_tag: str = ""
    properties: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""
    body_size: int = 0
    complete: bool = True
    conn: tuple[str, int, str, int] = ("", 0, "", 0)
    conn_id: int = 0
    channel: int = 0
    sender: str = ""
    received: int = 0  # body bytes seen so far


@dataclass
class AmqpStats:
    """Counters and warnings shared by all AMQP connections of one capture."""

    connections: int = 0
    frames: int = 0
    messages: int = 0
    garbage_bytes: int = 0
    lost_messages: int = 0
    resyncs: int = 0
    encrypted: int = 0
    warnings: list[str] = field(default_factory=list)


class _Reader:
    """Sequential reader over one frame payload; raises FrameError past the end."""

    __slots__ = ("b", "i")

    def __init__(self, b: bytes):
        self.b = b
        self.i = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.i + n > len(self.b):
            raise FrameError("short frame")
        out = self.b[self.i : self.i + n]
        self.i += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def shortstr(self) -> str:
        return self.take(self.u8()).decode("utf-8", "replace")


def parse_method(payload: bytes) -> tuple[int, int, dict[str, Any]]:
    """(class id, method id, arguments) of a method frame payload; arguments are decoded
    for basic.publish/deliver/return/get-ok only. Raises FrameError if it does not parse."""
    r = _Reader(payload)
    cls, meth = r.u16(), r.u16()
    args: dict[str, Any] = {}
    if cls == BASIC:
        if meth == PUBLISH:
            r.u16()
            args = {"exchange": r.shortstr(), "routing_key": r.shortstr()}
            r.u8()
        elif meth == DELIVER:
            args = {"consumer_tag": r.shortstr()}
            r.u64()
            r.u8()
            args.update(exchange=r.shortstr(), routing_key=r.shortstr())
        elif meth == RETURN:
            r.u16()
            r.shortstr()
            args = {"exchange": r.shortstr(), "routing_key": r.shortstr()}
        elif meth == GET_OK:
            r.u64()
            r.u8()
            args = {"exchange": r.shortstr(), "routing_key": r.shortstr()}
            r.u32()
    return cls, meth, args


def parse_content_header(payload: bytes) -> tuple[int, dict[str, Any]]:
    """(body size, properties) of a content header payload. Raises FrameError."""
    r = _Reader(payload)
    r.u16()  # class
    r.u16()  # weight
    size = r.u64()
    flags = [r.u16()]
    while flags[-1] & 1:
        if len(flags) > 4:
            raise FrameError("too many property flag words")
        flags.append(r.u16())
    props: dict[str, Any] = {}
    f = flags[0]
    for bit, name, kind in _PROPS:
        if not f & bit:
            continue
        if kind == "s":
            props[name] = r.shortstr()
        elif kind == "t":
            n = r.u32()
            r.take(n)
            props[name] = {"size": n}
        elif kind == "B":
            props[name] = r.u8()
        else:
            props[name] = r.u64()
    return size, props


class _Direction:
    """Frame parser of one direction of one connection."""

    def __init__(self, owner: AmqpConnection, direction: int, expect_header: bool, sync: bool):
        self.owner = owner
        self.direction = direction
        self.buf = bytearray()
        self.base = 0  # absolute stream offset of buf[0]
        self.times = TimeMap()
        self.expect_header = expect_header
        self.syncing = sync
        self.checked_tls = False
        self.channels: dict[int, AmqpMessage] = {}  # channel -> message awaiting content

    def feed(self, t_ns: int, data: bytes) -> None:
        self.times.add(t_ns, len(data))
        self.buf += data
        self._run()

    def gap(self, missing: int) -> None:
        stats = self.owner.stats
        stats.garbage_bytes += len(self.buf)
        self._consume(len(self.buf))
        n = max(missing, 0)
        self.base += n
        self.times.skip(n)
        self._lose_all()
        self.expect_header = False
        self.syncing = True

    def close(self) -> None:
        self._lose_all()

    def _lose_all(self) -> None:
        for msg in self.channels.values():
            msg.complete = False
            self.owner.stats.lost_messages += 1
        self.channels.clear()

    def _consume(self, n: int) -> None:
        del self.buf[:n]
        self.base += n
        self.times.trim(self.base)

    def _run(self) -> None:
        buf = self.buf
        stats = self.owner.stats
        while not self.owner.encrypted:
            if not self.checked_tls and len(buf) >= 5:
                self.checked_tls = True
                if looks_like_tls(buf, from_start=False):
                    self.owner.set_encrypted()
                    return
            if self.expect_header:
                if len(buf) < 8:
                    return
                if buf[:8] == PROTOCOL_HEADER:
                    self._consume(8)
                    self.expect_header = False
                    continue
                if buf[:4] == b"AMQP":  # another protocol version: not decodable
                    self.owner.skip(f"AMQP protocol header {bytes(buf[4:8]).hex()}, not 0-9-1")
                    return
                self.expect_header = False
                self.syncing = True
            if self.syncing and not self._sync():
                return
            if len(buf) < 7:
                return
            ftype, channel, size = _FRAME.unpack_from(buf, 0)
            if ftype not in (1, 2, 3, 8) or size > MAX_FRAME:
                self._lost_sync()
                continue
            if len(buf) < 8 + size:
                return
            if buf[7 + size] != FRAME_END:
                self._lost_sync()
                continue
            t_first = self.times.time_at(self.base)
            t_last = self.times.time_at(self.base + 7 + size)
            payload = bytes(buf[7 : 7 + size])
            self._consume(8 + size)
            stats.frames += 1
            try:
                self._frame(ftype, channel, payload, t_first, t_last)
            except FrameError:
                stats.garbage_bytes += 8 + size
                lost = self.channels.pop(channel, None)
                if lost is not None:
                    stats.lost_messages += 1

    def _lost_sync(self) -> None:
        stats = self.owner.stats
        stats.resyncs += 1
        stats.garbage_bytes += 1
        self._consume(1)
        self._lose_all()
        self.syncing = True

    def _sync(self) -> bool:
        """Find two chained plausible frames (or one ending the buffer); drop what precedes."""
        buf = self.buf
        i = 0
        n = len(buf)
        while i + 7 <= n:
            ftype, _ch, size = _FRAME.unpack_from(buf, i)
            if ftype in (1, 2, 3, 8) and size <= MAX_FRAME:
                end = i + 7 + size
                if end >= n:
                    if n - i > MAX_FRAME + 16:
                        i += 1
                        continue
                    break  # wait for more bytes
                if buf[end] == FRAME_END:
                    nxt = end + 1
                    ok = nxt == n
                    if nxt + 7 <= n:
                        t2, _c2, s2 = _FRAME.unpack_from(buf, nxt)
                        ok = t2 in (1, 2, 3, 8) and s2 <= MAX_FRAME
                    elif nxt < n:
                        break  # wait for the next header to confirm
                    if ok:
                        self.owner.stats.garbage_bytes += i
                        self._consume(i)
                        self.syncing = False
                        return True
            i += 1
        if i:
            self.owner.stats.garbage_bytes += i
            self._consume(i)
        return False

    def _frame(self, ftype: int, channel: int, payload: bytes, t_first: int, t_last: int) -> None:
        if ftype == FRAME_HEARTBEAT:
            return
        stats = self.owner.stats
        if ftype == FRAME_METHOD:
            cls, meth, args = parse_method(payload)
            old = self.channels.pop(channel, None)
            if old is not None:  # content never completed
                stats.lost_messages += 1
            if cls == BASIC and meth in KINDS:
                self.channels[channel] = AmqpMessage(
                    kind=KINDS[meth],
                    exchange=args.get("exchange", ""),
                    routing_key=args.get("routing_key", ""),
                    consumer_tag=args.get("consumer_tag", ""),
                    t_first_ns=t_first,
                    t_last_ns=t_last,
                    channel=channel,
                    body_size=-1,
                )
            return
        msg = self.channels.get(channel)
        if msg is None:
            return  # content of a message whose method frame was not captured
        if ftype == FRAME_HEADER:
            if msg.body_size >= 0:
                raise FrameError("second content header")
            size, props = parse_content_header(payload)
            msg.body_size = size
            msg.properties = props
            msg.t_last_ns = t_last
            if size == 0:
                self._emit(channel)
            return
        # body
        if msg.body_size < 0:
            raise FrameError("body before content header")
        room = BODY_LIMIT - len(msg.body)
        if room > 0:
            msg.body += payload[:room]
        msg.t_last_ns = t_last
        msg.received += len(payload)
        if msg.received >= msg.body_size:
            self._emit(channel)

    def _emit(self, channel: int) -> None:
        msg = self.channels.pop(channel)
        self.owner.emit(self.direction, msg)


class AmqpConnection:
    """tcp.StreamHandler for one AMQP 0-9-1 connection (see the module docstring)."""

    def __init__(
        self, conn: Connection, on_message: Callable[[AmqpMessage], None], stats: AmqpStats
    ):
        self.conn = conn
        self.on_message = on_message
        self.stats = stats
        stats.connections += 1
        self.label = "{}:{} -> {}:{}".format(*conn.tuple)
        self.encrypted = False
        self.skipped = False
        self.dirs = (
            _Direction(self, 0, expect_header=conn.syn_seen, sync=not conn.syn_seen),
            _Direction(self, 1, expect_header=False, sync=not conn.syn_seen),
        )

    def set_encrypted(self) -> None:
        self.encrypted = True
        self.stats.encrypted += 1
        self.stats.warnings.append(f"AMQP connection {self.label} is TLS: {ENCRYPTED}")

    def skip(self, why: str) -> None:
        self.skipped = True
        self.stats.warnings.append(f"AMQP connection {self.label}: {why}; skipped")

    def data(self, direction: int, t_ns: int, data: bytes) -> None:
        if not (self.encrypted or self.skipped):
            self.dirs[direction].feed(t_ns, data)

    def gap(self, direction: int, t_ns: int, missing: int) -> None:
        if not (self.encrypted or self.skipped):
            self.dirs[direction].gap(missing)

    def close(self, t_ns: int, reason: str) -> None:
        for d in self.dirs:
            d.close()
            d.owner = None  # break the reference cycle: freed without a garbage collection

    def emit(self, direction: int, msg: AmqpMessage) -> None:
        msg.conn = self.conn.tuple
        msg.conn_id = self.conn.id
        msg.sender = self.conn.client[0] if direction == 0 else self.conn.server[0]
        self.stats.messages += 1
        self.on_message(msg)
