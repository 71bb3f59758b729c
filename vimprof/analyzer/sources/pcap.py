"""Streaming reader of classic pcap and pcapng captures, down to TCP segments.

Reads record by record from a buffered file (never the whole file), decodes the link layer
(Ethernet with 802.1Q/802.1ad tags, Linux SLL, Linux SLL2, raw IPv4/IPv6, BSD loopback),
IPv4/IPv6 and TCP, and yields one `Packet` per TCP segment. Other packets (UDP, ARP, IP
fragments, runts) are counted in `PcapReader.skipped` and dropped.

Sources of the formats: classic pcap = https://wiki.wireshark.org/Development/LibpcapFileFormat
(magic a1b2c3d4 for microsecond, a1b23c4d for nanosecond timestamps, either byte order);
pcapng = IETF draft-ietf-opsawg-pcapng (SHB 0x0A0D0D0A, IDB 1, SPB 3, EPB 6, obsolete PB 2,
option if_tsresol 9, if_tsoffset 14); link types = https://www.tcpdump.org/linktypes.html.

Timestamps are integer ns since the Unix epoch. Errors: VimprofError for a file that is not a
capture, an unknown link type, or a file that cannot be opened; a file cut in the middle of a
record ends the iteration cleanly with `truncated = True` and a line in `warnings`.

Analyzer stage 1, sources (vimprof/analyzer/__init__.py): capture bytes in, `Packet`s out;
sources/merge.py merges several files, tcp.py takes the packets.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from vimprof.errors import VimprofError

# Link types (tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = {
    LINKTYPE_NULL: "NULL (BSD loopback)",
    LINKTYPE_ETHERNET: "EN10MB (Ethernet)",
    LINKTYPE_RAW: "RAW (IPv4/IPv6)",
    LINKTYPE_LOOP: "LOOP (OpenBSD loopback)",
    LINKTYPE_LINUX_SLL: "LINUX_SLL",
    LINKTYPE_IPV4: "IPV4",
    LINKTYPE_IPV6: "IPV6",
    LINKTYPE_LINUX_SLL2: "LINUX_SLL2",
}

# TCP flags.
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN = (0x8100, 0x88A8, 0x9100)

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D

# A record larger than this is a corrupt length field, not a packet (the largest snaplen in use
# is 262144; pcapng blocks can be larger only for odd options, still far below this).
MAX_RECORD = 16 * 1024 * 1024

_ETHERTYPE = struct.Struct("!H")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBB")
# IPv4 fields the fast path reads: total length, flags+fragment offset, protocol, addresses
_IPV4_FAST = struct.Struct("!2xH2xH1xB2x4s4s")
# the same followed by the TCP header fields (an IPv4 header without options: IHL 5)
_IPV4_TCP_FAST = struct.Struct("!2xH2xH1xB2x4s4sHHIIBB")


class Packet(NamedTuple):
    """One TCP segment: capture time (ns since epoch), the IP + TCP tuple, and its payload.

    `snapped` is true when the capture kept fewer bytes than were on the wire
    (caplen < origlen): the payload is then cut short and `wire_len` tells how long it was.
    """

    t_ns: int
    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes
    snapped: bool = False
    wire_len: int = -1  # payload bytes on the wire (> len(payload) when snapped); -1 = same


class Record(NamedTuple):
    """One raw capture record: time (ns since epoch), link type, captured bytes, wire length."""

    t_ns: int
    linktype: int
    data: bytes
    origlen: int


class PcapReader:
    """Iterate the TCP segments of a pcap or pcapng file, streaming.

    Use as `with PcapReader(path) as r: for pkt in r: ...`; `path` may also be an open
    binary file object, of which only read(n) is used (two calls per classic pcap record).
    After (or during) iteration: `truncated` (the file ends inside a record), `warnings`
    (list of str), `records` (capture records read), `packets` (TCP segments yielded),
    `skipped` (records that were not TCP over IPv4/IPv6, or IP fragments), `snapped` (TCP
    segments cut by the snaplen), `linktypes` (set of link types seen), `unsupported`
    (pcapng interfaces' link types that cannot be decoded: their packets are skipped with a
    warning; a classic pcap with one raises VimprofError instead), `format` ("pcap" or
    "pcapng").
    """

    def __init__(self, path: str | Path | BinaryIO):
        if hasattr(path, "read"):
            # an open binary file object: only its read(n) is used (it may block; fewer
            # than n bytes only at the real end), closed by close()
            self._fh: BinaryIO = path  # type: ignore[assignment]
            self.path = Path(str(getattr(path, "name", "<stream>")))
        else:
            self.path = Path(path)  # type: ignore[arg-type]
            try:
                self._fh = open(self.path, "rb", buffering=1 << 20)  # noqa: SIM115
            except OSError as e:
                raise VimprofError(f"cannot open capture {self.path}: {e.strerror}") from e
        self.truncated = False
        self.warnings: list[str] = []
        self.records = 0
        self.packets = 0
        self.skipped = 0
        self.snapped = 0
        self.linktypes: set[int] = set()
        self.unsupported: set[int] = set()  # pcapng link types seen but not decodable
        head = self._fh.read(4)
        if len(head) < 4:
            self._fh.close()
            raise VimprofError(
                f"{self.path} is not a pcap/pcapng capture (only {len(head)} bytes); "
                "record one with `tcpdump -w FILE` or re-run the capture"
            )
        (magic_be,) = struct.unpack(">I", head)
        (magic_le,) = struct.unpack("<I", head)
        if magic_be == PCAPNG_SHB:
            self.format = "pcapng"
        elif PCAP_MAGIC_US in (magic_be, magic_le) or PCAP_MAGIC_NS in (magic_be, magic_le):
            self.format = "pcap"
        else:
            self._fh.close()
            raise VimprofError(
                f"{self.path} is not a pcap/pcapng capture (starts with {head.hex()}); "
                "record one with `tcpdump -w FILE` (or convert it with `editcap -F pcap`)"
            )
        self._head = head

    # -- context manager / iteration -------------------------------------------------------

    def __enter__(self) -> PcapReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()

    def __iter__(self) -> Iterator[Packet]:
        if self.format == "pcap":
            return self._pcap_packets()
        return self.packets_iter()

    def packets_iter(self) -> Iterator[Packet]:
        """TCP segments in file order (see the class docstring)."""
        if self.format == "pcap":
            yield from self._pcap_packets()
            return
        for rec in self.records_iter():
            pkt = decode_record(rec)
            if pkt is None:
                self.skipped += 1
                continue
            if pkt.snapped:
                self.snapped += 1
            self.packets += 1
            yield pkt

    def records_iter(self) -> Iterator[Record]:
        """Raw capture records in file order."""
        if self.format == "pcap":
            yield from self._pcap_records()
        else:
            yield from self._pcapng_records()

    # -- classic pcap ----------------------------------------------------------------------

    def _cut(self, where: str) -> None:
        self.truncated = True
        self.warnings.append(
            f"capture truncated: {self.path} ends inside {where} after {self.records} records"
        )

    def _pcap_packets(self) -> Iterator[Packet]:
        """packets_iter for classic pcap, in one generator (the hot path of the analyzer):
        records read with two read(n) calls each, the common case (Ethernet without VLAN,
        SLL, SLL2; IPv4 with TCP, whole packets) decoded inline with precompiled Structs,
        the rest through decode_record; same results as decode_record for all."""
        if not self._pcap_header():
            return
        linktype = self._linktype
        frac_ns = self._frac_ns
        link = {LINKTYPE_ETHERNET: 14, LINKTYPE_LINUX_SLL: 16, LINKTYPE_LINUX_SLL2: 20}.get(
            linktype, -1
        )
        et_off = {LINKTYPE_ETHERNET: 12, LINKTYPE_LINUX_SLL: 14, LINKTYPE_LINUX_SLL2: 0}.get(
            linktype, -1
        )
        fast = link > 0
        min_len = link + 40
        ntoa = socket.inet_ntoa
        iptcp = _IPV4_TCP_FAST.unpack_from
        unpack_hdr = self._rec_hdr.unpack
        read = self._fh.read
        new = tuple.__new__
        cache: dict[bytes, str] = {}
        while True:
            hdr = read(16)
            if len(hdr) < 16:
                if hdr:
                    self._cut("a record header")
                return
            sec, frac, caplen, origlen = unpack_hdr(hdr)
            if caplen > MAX_RECORD:
                self._corrupt_record(caplen)
                return
            data = read(caplen)
            if len(data) < caplen:
                self._cut("a packet")
                return
            self.records += 1
            t_ns = sec * 1_000_000_000 + frac * frac_ns
            if (
                fast
                and caplen >= min_len
                and data[et_off] == 8
                and data[et_off + 1] == 0
                and data[link] == 0x45
                and origlen == caplen
            ):
                total, frag, proto, src, dst, sport, dport, seq, ack, doff, flags = iptcp(
                    data, link
                )
                end = link + total
                if proto == 6 and not frag & 0x3FFF and total >= 40 and end <= caplen:
                    p = link + 20
                    hlen = (doff >> 4) * 4
                    if hlen >= 20 and p + hlen <= end:
                        s = cache.get(src)
                        if s is None:
                            if len(cache) > 4096:
                                cache.clear()
                            s = cache[src] = ntoa(src)
                        d = cache.get(dst)
                        if d is None:
                            if len(cache) > 4096:
                                cache.clear()
                            d = cache[dst] = ntoa(dst)
                        payload = data[p + hlen : end]
                        self.packets += 1
                        yield new(
                            Packet,
                            (t_ns, s, sport, d, dport, seq, ack, flags, payload, False,
                             end - p - hlen),
                        )
                        continue
            pkt = decode_record(Record(t_ns, linktype, data, origlen))
            if pkt is None:
                self.skipped += 1
                continue
            if pkt.snapped:
                self.snapped += 1
            self.packets += 1
            yield pkt

    def _pcap_records(self) -> Iterator[Record]:
        for t_ns, data, origlen in self._pcap_raw():
            yield Record(t_ns, self._linktype, data, origlen)

    def _pcap_header(self) -> bool:
        """Read the rest of the classic pcap file header; sets the link type, timestamp unit
        and record header Struct. False if the file ends inside it."""
        rest = self._fh.read(20)
        if len(rest) < 20:
            self._cut("the file header")
            return False
        head = self._head
        little = struct.unpack("<I", head)[0] in (PCAP_MAGIC_US, PCAP_MAGIC_NS)
        endian = "<" if little else ">"
        (magic,) = struct.unpack(endian + "I", head)
        self._frac_ns = 1 if magic == PCAP_MAGIC_NS else 1000
        _vmaj, _vmin, _zone, _sigfigs, _snaplen, network = struct.unpack(endian + "HHiIII", rest)
        # The upper bits of `network` may hold FCS info (LINKTYPE_ upper 16 bits); keep the type.
        linktype = network & 0x0FFFFFFF
        _check_linktype(linktype, self.path)
        self.linktypes.add(linktype)
        self._linktype = linktype
        self._rec_hdr = struct.Struct(endian + "IIII")
        return True

    def _corrupt_record(self, caplen: int) -> None:
        self.truncated = True
        self.warnings.append(
            f"capture corrupt: record {self.records + 1} of {self.path} claims "
            f"{caplen} bytes; reading stopped there"
        )

    def _pcap_raw(self) -> Iterator[tuple[int, bytes, int]]:
        """(t_ns, captured bytes, wire length) of each record; sets self._linktype first."""
        if not self._pcap_header():
            return
        frac_ns = self._frac_ns
        rec_hdr = self._rec_hdr
        read = self._fh.read
        while True:
            hdr = read(16)
            if not hdr:
                return
            if len(hdr) < 16:
                self._cut("a record header")
                return
            sec, frac, caplen, origlen = rec_hdr.unpack(hdr)
            if caplen > MAX_RECORD:
                self._corrupt_record(caplen)
                return
            data = read(caplen)
            if len(data) < caplen:
                self._cut("a packet")
                return
            self.records += 1
            yield sec * 1_000_000_000 + frac * frac_ns, data, origlen

    # -- pcapng ----------------------------------------------------------------------------

    def _pcapng_records(self) -> Iterator[Record]:
        read = self._fh.read
        endian = "<"
        # per interface of the current section: (linktype, units per second, offset seconds, snap)
        ifaces: list[tuple[int, int, int, int]] = []
        last_t = 0
        first = True
        while True:
            if first:
                bt = self._head
                first = False
            else:
                bt = read(4)
                if not bt:
                    return
                if len(bt) < 4:
                    self._cut("a block header")
                    return
            lenb = read(4)
            if len(lenb) < 4:
                self._cut("a block header")
                return
            if struct.unpack(">I", bt)[0] == PCAPNG_SHB:
                bom = read(4)
                if len(bom) < 4:
                    self._cut("a section header")
                    return
                if struct.unpack("<I", bom)[0] == PCAPNG_BOM:
                    endian = "<"
                elif struct.unpack(">I", bom)[0] == PCAPNG_BOM:
                    endian = ">"
                else:
                    raise VimprofError(
                        f"{self.path} is not a pcap/pcapng capture (bad byte-order magic "
                        f"{bom.hex()}); re-record it with tcpdump or convert it with editcap"
                    )
                (blen,) = struct.unpack(endian + "I", lenb)
                if blen < 28 or blen > MAX_RECORD or blen % 4:
                    self._corrupt(blen)
                    return
                body = read(blen - 12)
                if len(body) < blen - 12:
                    self._cut("a section header")
                    return
                ifaces = []
                continue
            (btype,) = struct.unpack(endian + "I", bt)
            (blen,) = struct.unpack(endian + "I", lenb)
            if blen < 12 or blen > MAX_RECORD or blen % 4:
                self._corrupt(blen)
                return
            body = read(blen - 8)
            if len(body) < blen - 8:
                self._cut("a block")
                return
            body = body[:-4]  # trailing copy of the block length
            if btype == 1:  # Interface Description Block
                if len(body) < 8:
                    self._corrupt(blen)
                    return
                linktype, _res, snaplen = struct.unpack(endian + "HHI", body[:8])
                self.linktypes.add(linktype)
                if linktype not in SUPPORTED_LINKTYPES:
                    # pcapng may mix interfaces: keep the others (best partial result)
                    self.unsupported.add(linktype)
                    self.warnings.append(
                        f"{self.path}: interface {len(ifaces)} uses link type {linktype}, "
                        "which vimprof cannot decode; its packets are skipped (capture on an "
                        "Ethernet or loopback interface, or `-i any`)"
                    )
                per_sec, offset = _idb_options(body[8:], endian)
                ifaces.append((linktype, per_sec, offset, snaplen))
            elif btype in (6, 2):  # Enhanced Packet Block, obsolete Packet Block
                if len(body) < 20:
                    self._corrupt(blen)
                    return
                if btype == 6:
                    ifid, hi, lo, caplen, origlen = struct.unpack(endian + "IIIII", body[:20])
                else:
                    ifid, _drops, hi, lo, caplen, origlen = struct.unpack(
                        endian + "HHIIII", body[:20]
                    )
                if ifid >= len(ifaces):
                    self.warnings.append(
                        f"packet for undeclared interface {ifid} in {self.path}; skipped"
                    )
                    continue
                linktype, per_sec, offset, _snap = ifaces[ifid]
                ts = (hi << 32) | lo
                last_t = _ts_ns(ts, per_sec, offset)
                data = body[20 : 20 + caplen]
                self.records += 1
                yield Record(last_t, linktype, data, origlen)
            elif btype == 3:  # Simple Packet Block: interface 0, no timestamp
                if not ifaces or len(body) < 4:
                    continue
                (origlen,) = struct.unpack(endian + "I", body[:4])
                linktype, _ps, _off, snap = ifaces[0]
                caplen = min(origlen, snap or origlen, len(body) - 4)
                self.records += 1
                yield Record(last_t, linktype, body[4 : 4 + caplen], origlen)
            # other blocks (NRB, ISB, DSB, custom) carry nothing we need

    def _corrupt(self, blen: int) -> None:
        self.truncated = True
        self.warnings.append(
            f"capture corrupt: block after record {self.records} of {self.path} claims "
            f"length {blen}; reading stopped there"
        )


def _check_linktype(linktype: int, path: Path) -> None:
    if linktype not in SUPPORTED_LINKTYPES:
        names = ", ".join(f"{k} {v}" for k, v in SUPPORTED_LINKTYPES.items())
        raise VimprofError(
            f"{path} uses link type {linktype}, which vimprof cannot decode (supported: {names}); "
            "capture on an Ethernet or loopback interface, or `-i any` (Linux SLL)"
        )


def _idb_options(opts: bytes, endian: str) -> tuple[int, int]:
    """(timestamp units per second, offset in seconds) from IDB options (default 10^6, 0)."""
    per_sec = 1_000_000
    offset = 0
    i = 0
    n = len(opts)
    while i + 4 <= n:
        code, olen = struct.unpack(endian + "HH", opts[i : i + 4])
        val = opts[i + 4 : i + 4 + olen]
        if code == 0:
            break
        if code == 9 and olen >= 1:
            v = val[0]
            per_sec = 2 ** (v & 0x7F) if v & 0x80 else 10 ** min(v, 18)
        elif code == 14 and olen >= 8:
            (offset,) = struct.unpack(endian + "q", val[:8])
        i += 4 + olen + (-olen % 4)
    return per_sec, offset


def _ts_ns(ts: int, per_sec: int, offset: int) -> int:
    if per_sec == 1_000_000_000:
        ns = ts
    elif per_sec == 1_000_000:
        ns = ts * 1000
    else:
        ns = ts * 1_000_000_000 // per_sec
    return ns + offset * 1_000_000_000


def decode_record(rec: Record) -> Packet | None:
    """The TCP segment in one capture record, or None if it holds none (or a fragment)."""
    data = rec.data
    lt = rec.linktype
    if lt == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return None
        (etype,) = _ETHERTYPE.unpack_from(data, 12)
        off = 14
        while etype in ETH_VLAN:
            if len(data) < off + 4:
                return None
            (etype,) = _ETHERTYPE.unpack_from(data, off + 2)
            off += 4
    elif lt == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            return None
        (etype,) = _ETHERTYPE.unpack_from(data, 14)
        off = 16
    elif lt == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            return None
        (etype,) = _ETHERTYPE.unpack_from(data, 0)
        off = 20
    elif lt in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        if not data:
            return None
        etype = ETH_IPV4 if data[0] >> 4 == 4 else ETH_IPV6
        off = 0
    elif lt in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(data) < 5:
            return None
        etype = ETH_IPV4 if data[4] >> 4 == 4 else ETH_IPV6
        off = 4
    else:
        return None
    if etype == ETH_IPV4:
        return _ipv4(rec, data, off)
    if etype == ETH_IPV6:
        return _ipv6(rec, data, off)
    return None


def _ipv4(rec: Record, data: bytes, off: int) -> Packet | None:
    if len(data) < off + 20:
        return None
    vihl, _tos, total, _id, frag, _ttl, proto, _csum, src, dst = _IPV4.unpack_from(data, off)
    if vihl >> 4 != 4 or proto != 6:
        return None
    if frag & 0x3FFF:  # MF set or fragment offset != 0: fragments are not reassembled
        return None
    ihl = (vihl & 0x0F) * 4
    if ihl < 20:
        return None
    # IP total length bounds the segment (Ethernet pads short frames); 0 = TSO, use what is there
    end = off + total if total else len(data)
    wire_end = end
    end = min(end, len(data))
    return _tcp(
        rec,
        data,
        off + ihl,
        end,
        wire_end,
        socket.inet_ntop(socket.AF_INET, src),
        socket.inet_ntop(socket.AF_INET, dst),
    )


_IPV6_EXT = {0, 43, 60}  # hop-by-hop, routing, destination options


def _ipv6(rec: Record, data: bytes, off: int) -> Packet | None:
    if len(data) < off + 40:
        return None
    vtc, plen, nxt, _hop, src, dst = _IPV6.unpack_from(data, off)
    if vtc >> 28 != 6:
        return None
    end = off + 40 + plen if plen else len(data)
    wire_end = end
    end = min(end, len(data))
    p = off + 40
    while nxt in _IPV6_EXT:
        if len(data) < p + 2:
            return None
        nxt, hlen = data[p], (data[p + 1] + 1) * 8
        p += hlen
    if nxt != 6:  # not TCP, or a fragment header (44)
        return None
    return _tcp(
        rec,
        data,
        p,
        end,
        wire_end,
        socket.inet_ntop(socket.AF_INET6, src),
        socket.inet_ntop(socket.AF_INET6, dst),
    )


def _tcp(
    rec: Record, data: bytes, p: int, end: int, wire_end: int, src: str, dst: str
) -> Packet | None:
    if end < p + 20:
        return None
    sport, dport, seq, ack, doff, flags = _TCP.unpack_from(data, p)
    hlen = (doff >> 4) * 4
    if hlen < 20 or p + hlen > end:
        return None
    snapped = rec.origlen > len(rec.data) or wire_end > end
    payload = data[p + hlen : end]
    wire_len = max(wire_end - p - hlen, len(payload)) if snapped else len(payload)
    return Packet(rec.t_ns, src, sport, dst, dport, seq, ack, flags, payload, snapped, wire_len)
