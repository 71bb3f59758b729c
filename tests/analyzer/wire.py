"""Builders of capture bytes for the analyzer tests: IPv4/IPv6 + TCP, link layers, files."""

from __future__ import annotations

import socket
import struct

import msgpack

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10


def tcp(
    sport: int, dport: int, seq: int, ack: int = 0, flags: int = ACK | PSH, payload: bytes = b""
) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload


def ipv4(src: str, dst: str, segment: bytes, frag: int = 0, proto: int = 6) -> bytes:
    return (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(segment),
            1,
            frag,
            64,
            proto,
            0,
            socket.inet_aton(src),
            socket.inet_aton(dst),
        )
        + segment
    )


def ipv6(src: str, dst: str, segment: bytes) -> bytes:
    return (
        struct.pack(
            "!IHBB16s16s",
            6 << 28,
            len(segment),
            6,
            64,
            socket.inet_pton(socket.AF_INET6, src),
            socket.inet_pton(socket.AF_INET6, dst),
        )
        + segment
    )


def eth(ip: bytes, vlans: tuple[int, ...] = (), pad_to: int = 0) -> bytes:
    etype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
    out = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01"
    for v in vlans:
        out += struct.pack("!HH", 0x8100, v)
    out += struct.pack("!H", etype) + ip
    return out.ljust(pad_to, b"\x00")


def sll(ip: bytes) -> bytes:
    etype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
    return struct.pack("!HHH8sH", 0, 772, 6, b"\x00" * 8, etype) + ip


def sll2(ip: bytes) -> bytes:
    etype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
    return struct.pack("!HHIHBB8s", etype, 0, 1, 772, 0, 6, b"\x00" * 8) + ip


def pcap(
    records: list[tuple[int, bytes]],
    linktype: int = 1,
    nano: bool = False,
    endian: str = "<",
    origlens: dict[int, int] | None = None,
) -> bytes:
    """Classic pcap; records are (t_ns, frame)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)
    for i, (t, frame) in enumerate(records):
        sec, rem = divmod(t, 1_000_000_000)
        frac = rem if nano else rem // 1000
        orig = (origlens or {}).get(i, len(frame))
        out += struct.pack(endian + "IIII", sec, frac, len(frame), orig) + frame
    return out


def _block(endian: str, btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(endian + "II", btype, n) + body + struct.pack(endian + "I", n)


def pcapng(
    records: list[tuple[int, bytes]],
    linktype: int = 1,
    tsresol: int | None = None,
    endian: str = "<",
    spb: bool = False,
) -> bytes:
    """pcapng with one SHB, one IDB (optional if_tsresol) and EPBs (or SPBs)."""
    shb = struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    out = b""
    body = shb
    n = len(body) + 12
    out += (
        struct.pack(">I", 0x0A0D0D0A)
        + struct.pack(endian + "I", n)
        + body
        + struct.pack(endian + "I", n)
    )
    opts = b""
    per_sec = 1_000_000
    if tsresol is not None:
        opts += struct.pack(endian + "HH", 9, 1) + bytes([tsresol]) + b"\x00\x00\x00"
        per_sec = 2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10**tsresol
    opts += struct.pack(endian + "HH", 0, 0)
    out += _block(endian, 1, struct.pack(endian + "HHI", linktype, 0, 0) + opts)
    for t, frame in records:
        if spb:
            out += _block(endian, 3, struct.pack(endian + "I", len(frame)) + frame)
            continue
        ts = t * per_sec // 1_000_000_000
        out += _block(
            endian,
            6,
            struct.pack(endian + "IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame))
            + frame,
        )
    return out


def yamux(
    ftype: int, flags: int, stream: int, payload: bytes = b"", length: int | None = None
) -> bytes:
    n = len(payload) if length is None else length
    return struct.pack(">BBHII", 0, ftype, flags, stream, n) + payload


def rpc_request(method: str, seq: int, body: dict) -> bytes:
    # key order as Nomad writes them (sorted), seen in real captures
    return msgpack.packb({"Seq": seq, "ServiceMethod": method}, use_bin_type=False) + msgpack.packb(
        body, use_bin_type=False
    )


def rpc_response(method: str, seq: int, body: dict, error: str = "") -> bytes:
    return msgpack.packb(
        {"Error": error, "Seq": seq, "ServiceMethod": method}, use_bin_type=False
    ) + msgpack.packb(body, use_bin_type=False)


def go_time(unix_ns: int, zone_min: int = -1) -> bytes:
    sec, ns = divmod(unix_ns, 1_000_000_000)
    return struct.pack(">BqIh", 1, sec + 62135596800, ns, zone_min)


class Flow:
    """A TCP connection builder: produce packets (t_ns, src, sport, dst, dport, ...) in order."""

    def __init__(
        self,
        client=("10.0.0.1", 40000),
        server=("10.0.0.2", 4647),
        isn_c: int = 1000,
        isn_s: int = 5000,
    ):
        self.c, self.s = client, server
        self.seq = [isn_c, isn_s]
        self.packets: list[tuple[int, bytes]] = []
        self.t = 1_700_000_000_000_000_000

    def _ip(self, d: int, seg: bytes) -> bytes:
        a, b = (self.c, self.s) if d == 0 else (self.s, self.c)
        return ipv4(a[0], b[0], seg)

    def raw(self, d: int, seq: int, flags: int, payload: bytes = b"", dt: int = 1000) -> bytes:
        a, b = (self.c, self.s) if d == 0 else (self.s, self.c)
        self.t += dt
        frame = self._ip(d, tcp(a[1], b[1], seq, self.seq[1 - d], flags, payload))
        self.packets.append((self.t, frame))
        return frame

    def handshake(self) -> None:
        self.raw(0, self.seq[0], SYN)
        self.seq[0] += 1
        self.raw(1, self.seq[1], SYN | ACK)
        self.seq[1] += 1
        self.raw(0, self.seq[0], ACK)

    def send(self, d: int, payload: bytes, dt: int = 1000) -> int:
        """Send in order; returns the seq used."""
        seq = self.seq[d]
        self.raw(d, seq, ACK | PSH, payload, dt)
        self.seq[d] = (seq + len(payload)) % (1 << 32)
        return seq

    def fin(self, d: int) -> None:
        self.raw(d, self.seq[d], FIN | ACK)
        self.seq[d] += 1

    def eth_records(self) -> list[tuple[int, bytes]]:
        return [(t, eth(f)) for t, f in self.packets]


# -- AMQP 0-9-1 (spec section 4.2) and oslo.messaging envelopes ----------------------------

AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


def amqp_frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + b"\xce"


def _shortstr(s: str) -> bytes:
    b = s.encode()
    return bytes([len(b)]) + b


def amqp_publish(channel: int, exchange: str, routing_key: str) -> bytes:
    args = struct.pack(">H", 0) + _shortstr(exchange) + _shortstr(routing_key) + b"\x00"
    return amqp_frame(1, channel, struct.pack(">HH", 60, 40) + args)


def amqp_deliver(channel: int, exchange: str, routing_key: str, tag: int = 1) -> bytes:
    args = _shortstr("ctag1.x") + struct.pack(">Q", tag) + b"\x00"
    args += _shortstr(exchange) + _shortstr(routing_key)
    return amqp_frame(1, channel, struct.pack(">HH", 60, 60) + args)


def amqp_content(channel: int, body: bytes, frame_max: int = 4096, **props) -> bytes:
    """Content header (content_type, headers table, delivery_mode, correlation_id,
    reply_to, expiration as given) then body frames of at most frame_max bytes."""
    flags = 0
    p = b""
    if "content_type" in props:
        flags |= 0x8000
        p += _shortstr(props["content_type"])
    if "headers" in props:
        flags |= 0x2000
        table = props["headers"]
        p += struct.pack(">I", len(table)) + table
    if "delivery_mode" in props:
        flags |= 0x1000
        p += bytes([props["delivery_mode"]])
    if "correlation_id" in props:
        flags |= 0x0400
        p += _shortstr(props["correlation_id"])
    if "reply_to" in props:
        flags |= 0x0200
        p += _shortstr(props["reply_to"])
    if "expiration" in props:
        flags |= 0x0100
        p += _shortstr(props["expiration"])
    hdr = struct.pack(">HHQH", 60, 0, len(body), flags) + p
    out = amqp_frame(2, channel, hdr)
    for i in range(0, len(body), frame_max):
        out += amqp_frame(3, channel, body[i : i + frame_max])
    return out


def oslo_body(inner: dict) -> bytes:
    import json

    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()
