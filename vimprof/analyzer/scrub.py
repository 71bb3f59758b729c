"""Scrub credentials out of a capture so it can be shared or committed as test data.

Replacements keep every length (secret bytes become b"x"), so TCP sequence numbers, HTTP
Content-Length and msgpack string lengths stay valid and the analyzer derives the same timelines
from the scrubbed file. What is scrubbed:

- HTTP header values: X-Nomad-Token, X-Auth-Token, X-Subject-Token, Authorization, Cookie;
- msgpack string values of the keys AuthToken, SecretID, NodeSecretID (Nomad RPC,
  nomad/structs/structs.go QueryOptions/WriteRequest and Node);
- JSON Web Tokens anywhere (Nomad node and workload identities, "eyJ...");
- Keystone Fernet tokens anywhere ("gAAAAA...", e.g. oslo.messaging `_context_auth_token`).

A value split across two TCP segments is followed into the next segment of the same flow, and
across yamux frame headers inside it (hashicorp/yamux const.go: a 12-byte header that starts
with version 0; credentials never hold a 0x00 byte, so a 0x00 inside a value is a header).
`find_secrets` reassembles the streams and reports anything left, and `scrub_pcap` runs it on
its own output: a scrubbed file is verified, not assumed.

Usage: python -m vimprof.analyzer.scrub IN.pcap OUT.pcap

Beside the analyzer's stages, a tool (vimprof/analyzer/__init__.py): it reads captures
with sources/pcap.py and follows streams with tcp.py; nothing of the pipeline uses it.
"""

from __future__ import annotations

import re
import struct
import sys
from collections import defaultdict
from pathlib import Path

from vimprof.analyzer.sources.pcap import (
    PCAP_MAGIC_NS,
    PCAP_MAGIC_US,
    PcapReader,
    Record,
    decode_record,
)
from vimprof.analyzer.tcp import Connection, TcpReassembler
from vimprof.errors import VimprofError

_HTTP_SECRET = re.compile(
    rb"(?im)^(x-nomad-token|x-auth-token|x-subject-token|authorization|cookie)[ \t]*:[ \t]*"
    rb"([^\r\n]*)"
)
_TOKEN = re.compile(rb"eyJ[A-Za-z0-9_-]{6,}(?:\.[A-Za-z0-9_-]*){0,2}|gAAAAA[A-Za-z0-9_=-]{20,}")
_TOKEN_CHARS = re.compile(rb"^[A-Za-z0-9_.=-]+")
_MSGPACK_KEYS = (b"AuthToken", b"SecretID", b"NodeSecretID")
_MSGPACK_SECRET = re.compile(
    b"(?:" + b"|".join(re.escape(bytes([0xA0 | len(k)]) + k) for k in _MSGPACK_KEYS) + b")"
)
_YAMUX_HEADER = 12


def _walk(buf: bytes | bytearray, start: int, n: int, skip: int = 0) -> tuple[list[int], int, int]:
    """Indexes of the `n` secret bytes from `start`, skipping yamux headers (`skip` header
    bytes are still owed from the previous segment); returns them with the secret bytes and
    the header bytes that lie beyond the end of `buf` (owed to the next segment)."""
    idx: list[int] = []
    i = start + skip
    while len(idx) < n and i < len(buf):
        if buf[i] == 0:
            i += _YAMUX_HEADER
            continue
        idx.append(i)
        i += 1
    return idx, n - len(idx), max(0, i - len(buf))


def _str_value(buf: bytes, at: int) -> tuple[int, int] | None:
    """(start, length) of the msgpack string beginning at `at` (fixstr/str8/16/32), or None."""
    if at >= len(buf):
        return None
    b = buf[at]
    if 0xA0 <= b <= 0xBF:
        return at + 1, b & 0x1F
    widths = {0xD9: 1, 0xDA: 2, 0xDB: 4, 0xC4: 1, 0xC5: 2, 0xC6: 4}
    w = widths.get(b)
    if w is None or at + 1 + w > len(buf):
        return None
    return at + 1 + w, int.from_bytes(buf[at + 1 : at + 1 + w], "big")


def _spans(payload: bytes | bytearray) -> list[tuple[int, int]]:
    """(start, byte count) of secret values in one payload; a count may run past its end."""
    spans = [(m.start(2), m.end(2) - m.start(2)) for m in _HTTP_SECRET.finditer(payload)]
    spans += [(m.start(), m.end() - m.start()) for m in _TOKEN.finditer(payload)]
    for m in _MSGPACK_SECRET.finditer(payload):
        value = _str_value(payload, m.end())
        if value:
            spans.append(value)
    return spans


class _Scrubber:
    """Per-flow state: secret bytes still owed from the previous segment of each flow."""

    def __init__(self) -> None:
        self.owed: dict[tuple, int] = defaultdict(int)  # msgpack value bytes still to blank
        self.skip: dict[tuple, int] = defaultdict(int)  # yamux header bytes still to skip
        self.in_token: dict[tuple, bool] = defaultdict(bool)  # a token ran to the segment end
        self.replaced = 0

    def payload(self, flow: tuple, payload: bytes) -> bytes:
        buf = bytearray(payload)
        secret: list[int] = []
        if self.owed[flow]:
            secret, self.owed[flow], self.skip[flow] = _walk(
                buf, 0, self.owed[flow], self.skip[flow])
        elif self.in_token[flow]:
            m = _TOKEN_CHARS.match(payload)
            secret = list(range(m.end())) if m else []
        self.in_token[flow] = False
        for a, n in _spans(payload):
            idx, owed, skip = _walk(buf, a, n)
            secret += idx
            if owed:
                self.owed[flow], self.skip[flow] = owed, skip
            elif a + n == len(buf) and _TOKEN.match(payload, a):
                self.in_token[flow] = True  # the token may go on in the next segment
        for i in secret:
            if buf[i] != 0x78:
                self.replaced += 1
                buf[i] = 0x78
        return bytes(buf)


def scrub_pcap(src: Path, dst: Path) -> int:
    """Write `src` (classic pcap, any byte order and resolution) to `dst` with credentials
    replaced by b"x"; returns the number of bytes replaced.

    Raises VimprofError when `src` is not a classic pcap or when `find_secrets` still finds a
    credential in the output (which is then deleted).
    """
    data = Path(src).read_bytes()
    if len(data) < 24:
        raise VimprofError(f"{src} is not a pcap capture (too short)")
    for endian in "<>":
        (magic,) = struct.unpack(endian + "I", data[:4])
        if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            break
    else:
        raise VimprofError(
            f"{src}: only classic pcap can be scrubbed; convert it with `editcap -F pcap`"
        )
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    out = bytearray(data[:24])
    scrubber = _Scrubber()
    pos = 24
    while pos + 16 <= len(data):
        caplen, origlen = struct.unpack(endian + "II", data[pos + 8 : pos + 16])
        rec = data[pos + 16 : pos + 16 + caplen]
        pkt = decode_record(Record(0, linktype, rec, origlen))
        if pkt and pkt.payload:
            at = rec.rfind(pkt.payload)
            flow = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
            rec = rec[:at] + scrubber.payload(flow, pkt.payload) + rec[at + len(pkt.payload) :]
        out += data[pos : pos + 16] + rec
        pos += 16 + caplen
    Path(dst).write_bytes(bytes(out))
    left = find_secrets(dst)
    if left:
        Path(dst).unlink()
        raise VimprofError(f"scrubbing {src} left credentials behind: {'; '.join(left[:3])}")
    return scrubber.replaced


class _Collect:
    """Stream handler keeping each direction's bytes (small test captures only)."""

    def __init__(self, conn: Connection, sink: list[bytearray]):
        self.bufs = (bytearray(), bytearray())
        sink.extend(self.bufs)

    def data(self, direction: int, t_ns: int, data: bytes) -> None:
        self.bufs[direction].extend(data)

    def gap(self, direction: int, t_ns: int, missing: int) -> None:
        pass

    def close(self, t_ns: int, reason: str) -> None:
        pass


def find_secrets(path: Path) -> list[str]:
    """Credentials still readable in the reassembled TCP streams of `path` (descriptions)."""
    streams: list[bytearray] = []
    tcp = TcpReassembler(lambda conn: _Collect(conn, streams))
    last = 0
    with PcapReader(path) as reader:
        for pkt in reader:
            tcp.add(pkt)
            last = pkt.t_ns
    tcp.finish(last)
    found = []
    for buf in streams:
        data = bytes(buf)
        for a, n in _spans(data):
            idx, _, _ = _walk(data, a, n)
            value = bytes(data[i] for i in idx)
            if value.strip(b"x"):
                found.append(f"{value[:12]!r}... at stream offset {a}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m vimprof.analyzer.scrub IN.pcap OUT.pcap", file=sys.stderr)
        return 2
    try:
        n = scrub_pcap(Path(argv[0]), Path(argv[1]))
    except VimprofError as exc:
        print(f"scrub: error: {exc}", file=sys.stderr)
        return 2
    print(f"{argv[1]}: {n} credential bytes replaced; verified clean")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
