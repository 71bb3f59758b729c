"""Nomad RPC (port 4647) decoder: connection mode byte, yamux, msgpack-rpc.

Wire facts (shared/design/nomad-internals.md section 1):
- first byte of a connection (`helper/pool/conn.go`, `nomad/rpc.go`): 0x01 RpcNomad (plain
  msgpack-rpc), 0x02 RpcRaft (skipped), 0x03 RpcMultiplex (yamux, streams are msgpack-rpc),
  0x04 RpcTLS ("encrypted: cannot decode", skipped), 0x05 RpcStreaming (skipped),
  0x06 RpcMultiplexV2 (yamux; the opener of each stream first writes 0x01 RPC or 0x05
  streaming);
- yamux frame (hashicorp/yamux `const.go`): 12-byte big-endian header version u8, type u8
  (0 Data, 1 WindowUpdate, 2 Ping, 3 GoAway), flags u16 (SYN 1, ACK 2, FIN 4, RST 8),
  stream u32, length u32; a Data frame carries `length` payload bytes;
- msgpack-rpc (hashicorp/net-rpc-msgpackrpc): a header map then a body map per message;
  request header {Seq, ServiceMethod}, response header {Error, Seq, ServiceMethod} (keys
  sorted on the wire, observed with Nomad v1.11.3). The side
  that opened a stream (or dialled a plain 0x01 connection) sends the requests.

`NomadRpcConnection` is a `tcp.StreamHandler`; each decoded message goes to `on_message` as an
`RpcMessage`, responses paired with their request by (connection, stream, Seq). Strings are
raw msgpack (decoded with `msgpack.Unpacker(raw=True)`): bodies come out with bytes converted
to str where they are UTF-8 and left as bytes otherwise (Go time.Time blobs: see
`go_time_ns`); with `body_fields` (e.g. BODY_FIELDS) only the named fields of the named
methods are converted, the rest of a body is dropped. Credential fields (`SECRET_KEYS`,
e.g. AuthToken, SecretID) are dropped.

Gaps and garbage never raise: the yamux framer resyncs on a chain of plausible headers and a
msgpack-rpc stream resyncs on the next `ServiceMethod` header map; the message in flight is
lost and counted in `RpcStats`.

Analyzer stage 3, decoders (vimprof/analyzer/__init__.py): byte chunks of a connection in
(tcp.StreamHandler), `RpcMessage`s out.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from vimprof.analyzer.decoders.timemap import TimeMap
from vimprof.analyzer.decoders.tls import ENCRYPTED, looks_like_tls
from vimprof.analyzer.tcp import Connection
from vimprof.errors import VimprofError

RPC_NOMAD = 0x01
RPC_RAFT = 0x02
RPC_MULTIPLEX = 0x03
RPC_TLS = 0x04
RPC_STREAMING = 0x05
RPC_MULTIPLEX_V2 = 0x06

YAMUX_DATA, YAMUX_WINDOW_UPDATE, YAMUX_PING, YAMUX_GO_AWAY = 0, 1, 2, 3
FLAG_SYN, FLAG_ACK, FLAG_FIN, FLAG_RST = 1, 2, 4, 8
YAMUX_HEADER = struct.Struct(">BBHII")
MAX_FRAME = 16 * 1024 * 1024  # yamux windows are 256 KiB; anything far above is not a frame
MAX_MSG = 64 * 1024 * 1024

SECRET_KEYS = frozenset(
    {
        "AuthToken",
        "SecretID",
        "Token",
        "IdentityToken",
        "SignedIdentities",
        "ReplicationToken",
        "MigrateTokens",
    }
)
# Go's time.Time MarshalBinary (src/time/time.go): version 1 = 15 bytes, version 2 = 16 bytes
# (adds the zone offset's seconds); seconds are counted from January 1, year 1.
GO_EPOCH_OFFSET = 62_135_596_800

# Start of a header map, for resync. Nomad's codec writes map keys sorted (seen on the wire,
# v1.11.3): request 82 a3 "Seq" ad "ServiceMethod", response 83 a5 "Error" a3 "Seq" ...;
# the declaration order (ServiceMethod first) is accepted too.
_HEADER_SIG = re.compile(
    rb"\x82(?:\xa3Seq|\xadServiceMethod)|\x83(?:\xa5Error|\xa3Seq|\xadServiceMethod)"
)
_K_METHOD = b"ServiceMethod"
_K_SEQ = b"Seq"
_K_ERROR = b"Error"


def go_time_ns(blob: bytes | str) -> int:
    """ns since the Unix epoch of a Go `time.Time` MarshalBinary blob (15 or 16 bytes).

    Layout (Go src/time/time.go): byte 0 version (1, or 2 with a seconds offset byte),
    bytes 1-8 seconds since year 1 (big-endian int64; Unix seconds = value - 62135596800),
    bytes 9-12 nanoseconds (u32), bytes 13-14 zone offset in minutes (i16, -1 = UTC).
    The zero time (year 1) comes out as a large negative number. Accepts the str a UTF-8
    conversion may have produced. Raises VimprofError for anything else.
    """
    if isinstance(blob, str):
        try:
            blob = blob.encode("utf-8")
        except UnicodeEncodeError as e:
            raise VimprofError(f"not a Go time.Time blob: {blob!r}") from e
    if (
        not isinstance(blob, bytes | bytearray)
        or len(blob) not in (15, 16)
        or blob[0]
        not in (
            1,
            2,
        )
        or (blob[0] == 1 and len(blob) != 15)
        or (blob[0] == 2 and len(blob) != 16)
    ):
        raise VimprofError(f"not a Go time.Time blob: {bytes(blob[:20]).hex()}")
    sec, nsec = struct.unpack(">qI", blob[1:13])
    if nsec >= 1_000_000_000:
        raise VimprofError(f"not a Go time.Time blob (nanoseconds {nsec}): {bytes(blob).hex()}")
    return (sec - GO_EPOCH_OFFSET) * 1_000_000_000 + nsec


def to_py(obj: Any, depth: int = 0) -> Any:
    """A raw-msgpack object with bytes turned to str where they are UTF-8.

    Map keys that are secrets (SECRET_KEYS) are dropped with their values.
    """
    t = type(obj)
    if t is bytes:
        try:
            return obj.decode("utf-8")
        except UnicodeDecodeError:
            return obj
    if t is int or t is bool or t is float or obj is None:
        return obj
    if isinstance(obj, bytes):
        try:
            return obj.decode("utf-8")
        except UnicodeDecodeError:
            return obj
    if depth > 100:
        return obj
    d1 = depth + 1
    if t is dict or isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if type(k) is bytes:
                try:
                    k = k.decode("utf-8")
                except UnicodeDecodeError:
                    pass
                else:
                    if k in SECRET_KEYS:
                        continue
            elif isinstance(k, bytes):
                k = to_py(k, d1)
                if isinstance(k, str) and k in SECRET_KEYS:
                    continue
            elif isinstance(k, str) and k in SECRET_KEYS:
                continue
            tv = type(v)
            if tv is bytes:
                try:  # noqa: SIM105 - contextlib.suppress is slower on this hot path
                    v = v.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            elif tv is not int and tv is not bool and v is not None:
                v = to_py(v, d1)
            out[k] = v
        return out
    if t is list or isinstance(obj, list | tuple):
        return [to_py(v, d1) for v in obj]
    return obj


# The body fields the Nomad phases read, per method (requests and responses alike): with
# `body_fields=BODY_FIELDS` only these are converted (to_py over whole bodies dominated the
# run time: an Alloc.GetAllocs response embeds the whole job); other methods get body None.
# A schema is True (the whole value), a dict of key -> schema ("*" = any key), or [schema]
# for each item of a list.
_ALLOC = {
    k: True
    for k in (
        "ID", "JobID", "EvalID", "NodeID", "ClientStatus", "DesiredStatus", "CreateIndex",
        "ModifyIndex", "AllocModifyIndex", "CreateTime", "ModifyTime",
    )
}
_TASK_STATE = {
    "State": True, "StartedAt": True, "FinishedAt": True, "Failed": True,
    "Events": [{"Type": True, "Time": True}],
}
BODY_FIELDS: dict[str, Any] = {
    "Job.Register": {
        "Job": {"ID": True}, "EvalID": True, "EvalCreateIndex": True, "JobModifyIndex": True,
        "Index": True,
    },
    "Job.Deregister": {"JobID": True, "Purge": True, "EvalID": True, "Index": True},
    "Node.GetClientAllocs": {"Allocs": True, "Index": True},
    "Alloc.GetAllocs": {"AllocIDs": True, "MinQueryIndex": True, "Allocs": [_ALLOC], "Index": True},
    "Node.UpdateAlloc": {"Alloc": [dict(_ALLOC, TaskStates={"*": _TASK_STATE})], "Index": True},
}


def compile_fields(schema: Any) -> Any:
    """A BODY_FIELDS schema with its dict keys as raw msgpack bytes: {b"Key": ("Key", sub)}."""
    if schema is True:
        return True
    if isinstance(schema, list):
        return [compile_fields(schema[0])]
    return {k.encode(): (k, compile_fields(v)) for k, v in schema.items()}


_COMPILED: dict[int, tuple[Any, dict[str, Any]]] = {}


def _compiled_body_fields(body_fields: dict[str, Any]) -> dict[str, Any]:
    """compile_fields of each method of `body_fields`, cached per mapping object (one
    analysis opens thousands of connections with the same BODY_FIELDS)."""
    hit = _COMPILED.get(id(body_fields))
    if hit is not None and hit[0] is body_fields:
        return hit[1]
    compiled = {m: compile_fields(f) for m, f in body_fields.items()}
    if body_fields is BODY_FIELDS:
        _COMPILED[id(body_fields)] = (body_fields, compiled)
    return compiled


_STAR = b"*"


def prune(obj: Any, schema: Any, depth: int = 0) -> Any:
    """`to_py` of only the parts of `obj` that `schema` (compile_fields of a BODY_FIELDS
    entry) names; None where the shape differs. Secret keys are dropped as in to_py."""
    if schema is True:
        return to_py(obj, depth)
    if depth > 100:
        return None
    d1 = depth + 1
    if isinstance(schema, list):
        if not isinstance(obj, list):
            return None
        sub = schema[0]
        if sub is True:
            return [to_py(v, d1) for v in obj]
        return [prune(v, sub, d1) for v in obj]
    if not isinstance(obj, dict):
        return None
    star = schema.get(_STAR)
    if star is None:
        out = {}
        get = obj.get
        for bkey, (key, sub) in schema.items():
            v = get(bkey, _MISSING)
            if v is _MISSING:
                continue
            if sub is True:
                tv = type(v)
                if tv is bytes:
                    try:  # noqa: SIM105 - contextlib.suppress is slower on this hot path
                        v = v.decode("utf-8")
                    except UnicodeDecodeError:
                        pass
                elif tv is not int and tv is not bool and v is not None:
                    v = to_py(v, d1)
                out[key] = v
            else:
                out[key] = prune(v, sub, d1)
        return out
    out = {}
    for k, v in obj.items():
        key = to_py(k) if isinstance(k, bytes) else k
        if isinstance(key, str) and key not in SECRET_KEYS:
            out[key] = prune(v, star[1], d1)
    return out


_MISSING = object()


@dataclass
class RpcMessage:
    """One msgpack-rpc message (header + body) on Nomad's RPC port.

    direction: "request" | "response"; method: ServiceMethod; seq: Seq; error: the
    response's Error ("" for success, "" on requests); body: decoded body (see `to_py`);
    t_first_ns / t_last_ns: capture times (ns since epoch) of the packets that carried the
    first header byte and the last body byte; conn: (client ip, client port, server ip,
    server port) of the TCP connection; stream: yamux stream id (0 on a plain connection);
    sender: the IP address that sent it; request: for a response, the paired request.
    """

    method: str
    direction: str
    seq: int
    error: str
    body: Any
    t_first_ns: int
    t_last_ns: int
    conn: tuple[str, int, str, int]
    conn_id: int
    stream: int
    sender: str
    request: RpcMessage | None = None


@dataclass
class RpcStats:
    """Counters and warnings shared by all RPC connections of one capture."""

    connections: int = 0
    messages: int = 0
    garbage_bytes: int = 0
    resyncs: int = 0
    lost_messages: int = 0
    unpaired_responses: int = 0
    joined_midway: int = 0  # connections that began before the capture (routine on a lab)
    skipped_connections: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def skip(self, why: str) -> None:
        self.skipped_connections[why] = self.skipped_connections.get(why, 0) + 1


# Unpackers between messages, for reuse (only small ones: an Unpacker keeps its buffer).
_POOL: list[Any] = []
_POOL_SIZE = 8
_POOL_MAX_BYTES = 256 * 1024


class _MsgpackRpcStream:
    """msgpack-rpc decoder of one direction of one stream (yamux stream or plain connection)."""

    def __init__(
        self,
        owner: NomadRpcConnection,
        stream: int,
        direction: int,
        is_request: bool,
        expect_mode_byte: bool,
    ):
        self.owner = owner
        self.stream = stream
        self.direction = direction
        self.is_request = is_request
        self.expect_mode_byte = expect_mode_byte
        self.times = TimeMap()
        self.ignored = False  # a streaming (0x05) stream: not msgpack-rpc
        self.unpacker: Any = None
        self.unpacker_base = 0  # absolute offset where the current unpacker starts
        self.obj_start = 0  # unpacker offset of the next object
        self.header: dict[bytes, Any] | None = None
        self.header_start = 0
        self.sync_buf: bytearray | None = None  # bytes waiting for a resync point
        self.sync_base = 0
        self._syncing = False
        self.skip_body = False
        self.fed = 0
        self.t0 = 0
        self.raw = bytearray()  # bytes of the message in flight (to rescan after garbage)
        self.raw_base = 0  # absolute offset of raw[0] (where the next message starts)

    def _new_unpacker(self, base: int) -> None:
        # An Unpacker costs ~40 KB (its parse stack): taken when bytes arrive, given back at
        # each message boundary (see _drain), so thousands of idle streams stay cheap; a
        # small pool saves making one per message. Offsets: obj_start, fed and header_start
        # count in the unpacker's tell() units; absolute = unpacker_base + those.
        up = _POOL.pop() if _POOL else None
        if up is None:
            up = msgpack.Unpacker(
                raw=True, strict_map_key=False, max_buffer_size=MAX_MSG, use_list=True
            )
        t0 = up.tell()
        self.unpacker = up
        self.unpacker_base = base - t0
        self.obj_start = t0
        self.fed = t0
        self.t0 = t0
        self.header = None
        self.raw = bytearray()
        self.raw_base = base

    def feed(self, t_ns: int, data: bytes) -> None:
        if self.ignored or not data:
            return
        if not self.expect_mode_byte and self.sync_buf is None:
            # the common case, in sync (_feed_unpacker inline)
            n = len(data)
            self.times.add(t_ns, n)
            up = self.unpacker
            if up is None:
                self._new_unpacker(self.raw_base)
                up = self.unpacker
            self.raw += data
            self.fed += n
            try:
                up.feed(data)
            except Exception:  # BufferFull: a length field that is not real
                self._lose(self.unpacker_base + self.obj_start + 1)
                return
            self._drain()
            return
        start = self.times.end
        self.times.add(t_ns, len(data))
        if self.expect_mode_byte:
            self.expect_mode_byte = False
            mode = data[0]
            if mode == RPC_STREAMING:
                self.ignored = True
                self.owner.stats.skip("streaming RPC stream (0x05)")
                return
            if mode != RPC_NOMAD:
                self.owner.stats.garbage_bytes += len(data)
                self.owner.stats.warnings.append(
                    f"RPC stream {self.stream} on {self.owner.label} starts with byte "
                    f"{mode:#04x}, not 0x01/0x05; skipped"
                )
                self.ignored = True
                return
            data = data[1:]
            start += 1
            self._new_unpacker(start)
            if not data:
                return
        if self.sync_buf is not None:
            self.sync_buf += data
            self._try_sync()
            return
        self._feed_unpacker(data)

    def feed_pieces(self, pieces: list[tuple[int, int, int]], payload: bytes) -> None:
        """Like `feed` for a payload that arrived in several segments: `pieces` are the
        (t_ns, from, to) of its parts (TimeMap.pieces). Fed to the unpacker at once."""
        if self.ignored or not payload:
            return
        if self.expect_mode_byte or self.sync_buf is not None or not pieces:
            pos = 0
            for t, lo, hi in pieces:
                self.feed(t, payload[pos : pos + hi - lo])
                pos += hi - lo
            if pos < len(payload):
                self.feed(pieces[-1][0] if pieces else 0, payload[pos:])
            return
        pos = 0
        for t, lo, hi in pieces:
            self.times.add(t, hi - lo)
            pos += hi - lo
        if pos < len(payload):
            self.times.add(pieces[-1][0], len(payload) - pos)
        self._feed_unpacker(payload)

    def _feed_unpacker(self, data: bytes | bytearray) -> None:
        if self.unpacker is None:
            self._new_unpacker(self.raw_base)
        self.raw += data
        self.fed += len(data)
        try:
            self.unpacker.feed(data)
        except Exception:  # BufferFull: a length field that is not real
            self._lose(self.unpacker_base + self.obj_start + 1)
            return
        self._drain()

    def _drain(self) -> None:
        up = self.unpacker
        while True:
            header = self.header
            if self.obj_start == self.fed:
                # every byte fed is consumed (the unpacker would raise OutOfData)
                if header is None:
                    # a message boundary with nothing buffered: release the unpacker
                    self.raw_base = self.unpacker_base + self.fed
                    self.raw.clear()
                    self.unpacker = None
                    if self.fed - self.t0 < _POOL_MAX_BYTES and len(_POOL) < _POOL_SIZE:
                        _POOL.append(up)  # clean: nothing buffered, between objects
                return
            try:
                if header is not None and self.skip_body:
                    up.skip()  # a body the analysis does not read: no objects built
                    obj = None
                else:
                    obj = up.unpack()
            except msgpack.OutOfData:
                return  # the object in flight continues in the next bytes
            except Exception:  # FormatError, StackError, unhashable key, ...
                self._lose(self.unpacker_base + self.obj_start + 1)
                return
            start = self.obj_start
            end = up.tell()
            self.obj_start = end
            base = self.unpacker_base
            if header is None:
                # _is_header inline
                if (
                    type(obj) is not dict
                    or type(obj.get(_K_METHOD)) is not bytes
                    or not isinstance(obj.get(_K_SEQ), int)
                    or (_K_ERROR in obj) == self.is_request
                ) and not _is_header(obj, self.is_request):
                    self._lose(base + start + 1)
                    return
                self.header = obj
                self.header_start = start
                wanted = self.owner.body_methods
                self.skip_body = wanted is not None and obj[_K_METHOD] not in wanted
                continue
            self.header = None
            upto = base + end
            n = upto - self.raw_base
            if n > 0:  # forget the raw bytes of this message
                if n >= len(self.raw):
                    self.raw.clear()
                else:
                    del self.raw[:n]
                self.raw_base = upto
            times = self.times
            self.owner.emit(
                self,
                header,
                obj,
                times.time_at(base + self.header_start),
                times.time_at(upto - 1),
            )
            times.trim(upto)

    def _trim_raw(self, upto: int) -> None:
        """Forget raw bytes before absolute offset `upto` (a message boundary)."""
        n = upto - self.raw_base
        if n > 0:
            del self.raw[:n]
            self.raw_base = upto

    def gap(self) -> None:
        """Bytes of this stream were lost: drop the message in flight and resync."""
        if self.ignored:
            return
        self.raw.clear()
        self.raw_base = self.times.end
        self._lose(self.times.end)

    def _lose(self, resume_at: int) -> None:
        """Drop the message in flight; look for the next header from absolute `resume_at`."""
        stats = self.owner.stats
        stats.resyncs += 1
        if self.header is not None or self.raw:
            stats.lost_messages += 1
        held = bytes(self.raw[max(resume_at - self.raw_base, 0) :])
        self.raw.clear()
        self.header = None
        self.unpacker = None
        self.sync_buf = bytearray(held)
        self.sync_base = self.times.end - len(held)
        self._try_sync()

    def _try_sync(self) -> None:
        if self._syncing:
            return  # called back from _feed_unpacker below: the loop picks it up
        self._syncing = True
        try:
            while self.sync_buf is not None:
                buf = self.sync_buf
                m = _HEADER_SIG.search(buf)
                if m is None:
                    keep = 15
                    if len(buf) > keep:
                        self.owner.stats.garbage_bytes += len(buf) - keep
                        del buf[: len(buf) - keep]
                        self.sync_base = self.times.end - len(buf)
                    return
                self.owner.stats.garbage_bytes += m.start()
                rest = bytes(buf[m.start() :])
                self.sync_buf = None
                self._new_unpacker(self.sync_base + m.start())
                self._feed_unpacker(rest)
        finally:
            self._syncing = False


_METHOD_NAMES: dict[bytes, str] = {}  # ServiceMethod bytes -> str (NomadRpcConnection.emit)


def _utf8(b: bytes) -> str | bytes:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def _is_header(obj: Any, is_request: bool) -> bool:
    if not isinstance(obj, dict) or _K_METHOD not in obj or _K_SEQ not in obj:
        return False
    if not isinstance(obj[_K_METHOD], bytes) or not isinstance(obj[_K_SEQ], int):
        return False
    return (_K_ERROR in obj) != is_request


class _YamuxFramer:
    """Splits one direction of a yamux session into frames; resyncs after a gap."""

    def __init__(self, owner: NomadRpcConnection, direction: int, syncing: bool):
        self.owner = owner
        self.direction = direction
        self.buf = bytearray()
        self.times = TimeMap()
        self.base = 0
        self.syncing = syncing

    def feed(self, t_ns: int, data: bytes) -> None:
        buf = self.buf
        frame = self.owner.frame
        d = self.direction
        unpack = YAMUX_HEADER.unpack_from
        if buf or self.syncing:
            if len(buf) != 12 or self.syncing:
                self.times.add(t_ns, len(data))
                buf += data
                self._run()
                return
            # A frame header alone in the buffer (yamux writes header and body apart, so
            # they often travel in two segments): its payload straight from `data`.
            version, ftype, flags, stream, length = unpack(buf, 0)
            if (
                ftype != YAMUX_DATA
                or version
                or flags > 0xF
                or not stream
                or length > MAX_FRAME
                or length > len(data)
            ):
                self.times.add(t_ns, len(data))
                buf += data
                self._run()
                return
            buf.clear()
            self.base += 12 + length
            self.times.skip(length)  # (the chunk list is trimmed before each add below)
            if length == len(data):
                frame(d, ftype, flags, stream, data, t_ns, None)
                return
            frame(d, ftype, flags, stream, data[:length], t_ns, None)
            data = data[length:]
        # Fast path (nothing buffered, in sync): whole frames straight from `data`, no copy
        # into the buffer; the rest (a frame cut by the segment end, or bytes that are not a
        # frame) goes through the buffer as above. Same results.
        n = len(data)
        i = 0
        bad = False  # stopped at a header that is not plausible: _run resyncs
        try:
            while n - i >= 12:
                version, ftype, flags, stream, length = unpack(data, i)
                if ftype == YAMUX_DATA:
                    if version or flags > 0xF or not stream or length > MAX_FRAME:
                        bad = True
                        break
                    end = i + 12 + length
                    if end > n:
                        break
                    payload = data[i + 12 : end]
                    i = end
                    frame(d, ftype, flags, stream, payload, t_ns, None)
                else:
                    if not _plausible(version, ftype, flags, stream, length):
                        bad = True
                        break
                    i += 12
                    frame(d, ftype, flags, stream, b"", t_ns, None)
        finally:
            if i:
                self.base += i
                self.times.skip(i)
        if i < n:
            self.times.trim(self.base)
            self.times.add(t_ns, n - i)
            buf += data[i:] if i else data
            if bad:
                self._run()
            # else: a frame cut by the segment end; _run would only find it incomplete

    def gap(self, missing: int) -> None:
        self.owner.stats.garbage_bytes += len(self.buf)
        self._consume(len(self.buf))
        n = max(missing, 0)
        self.base += n
        self.times.skip(n)
        self.syncing = True
        self.owner.yamux_gap(self.direction)

    def _consume(self, n: int) -> None:
        del self.buf[:n]
        self.base += n
        self.times.trim(self.base)

    def _run(self) -> None:
        buf = self.buf
        while True:
            if self.syncing and not self._sync():
                return
            if len(buf) < 12:
                return
            version, ftype, flags, stream, length = YAMUX_HEADER.unpack_from(buf, 0)
            if not _plausible(version, ftype, flags, stream, length):
                self.owner.stats.warnings.append(
                    f"yamux framing lost on {self.owner.label} direction {self.direction} "
                    f"at offset {self.base}; resyncing"
                )
                self.owner.stats.garbage_bytes += 1
                self._consume(1)
                self.syncing = True
                self.owner.yamux_gap(self.direction)
                continue
            if ftype == YAMUX_DATA:
                if len(buf) < 12 + length:
                    return
                pieces = self.times.pieces(self.base + 12, self.base + 12 + length)
                payload = bytes(buf[12 : 12 + length])
                self._consume(12 + length)
                self.owner.frame(self.direction, ftype, flags, stream, payload, 0, pieces)
            else:
                self._consume(12)
                self.owner.frame(self.direction, ftype, flags, stream, b"", 0, [])

    def _sync(self) -> bool:
        """Find a chain of two plausible headers; drop the bytes before it."""
        buf = self.buf
        i = 0
        while i + 12 <= len(buf):
            v, t, f, s, ln = YAMUX_HEADER.unpack_from(buf, i)
            if _plausible(v, t, f, s, ln):
                nxt = i + 12 + (ln if t == YAMUX_DATA else 0)
                if nxt + 12 > len(buf):
                    if len(buf) - i > 2 * 12 + 256 * 1024:
                        i += 1
                        continue
                    break  # wait for more bytes to confirm
                if _plausible(*YAMUX_HEADER.unpack_from(buf, nxt)):
                    self.owner.stats.garbage_bytes += i
                    self._consume(i)
                    self.syncing = False
                    return True
            i += 1
        if i:
            self.owner.stats.garbage_bytes += i
            self._consume(i)
        return False


def _plausible(version: int, ftype: int, flags: int, stream: int, length: int) -> bool:
    if version != 0 or ftype > 3 or flags > 0xF:
        return False
    if ftype == YAMUX_DATA:
        return stream != 0 and length <= MAX_FRAME
    if ftype == YAMUX_PING:
        return stream == 0
    if ftype == YAMUX_GO_AWAY:
        return stream == 0 and length <= 2
    return True


class NomadRpcConnection:
    """tcp.StreamHandler for one connection to Nomad's RPC port (see the module docstring)."""

    def __init__(
        self,
        conn: Connection,
        on_message: Callable[[RpcMessage], None],
        stats: RpcStats,
        body_fields: dict[str, Any] | None = None,
    ):
        self.conn = conn
        self.body_fields = None if body_fields is None else _compiled_body_fields(body_fields)
        self.body_methods = (
            None if body_fields is None else frozenset(m.encode() for m in body_fields)
        )
        self.on_message = on_message
        self.stats = stats
        stats.connections += 1
        self._tuple = conn.tuple
        self._senders = (conn.client[0], conn.server[0])
        self.label = "{}:{} -> {}:{}".format(*conn.tuple)
        self.mode: int | None = None
        self.skipped = False
        self.framers: tuple[_YamuxFramer, _YamuxFramer] | None = None
        self.plain: tuple[_MsgpackRpcStream, _MsgpackRpcStream] | None = None
        self.streams: dict[tuple[int, int], _MsgpackRpcStream] = {}
        self.pending: dict[tuple[int, int], RpcMessage] = {}
        self.early: list[tuple[int, int, bytes]] = []  # server bytes before the mode byte
        self._tls_checked = [False, False]
        # per direction: the framer's / stream's feed once data() has nothing else to do
        self._feeds: list[Callable[[int, bytes], None] | None] = [None, None]
        if not conn.syn_seen:
            # The connection began before the capture: Nomad clients dial 0x06 (yamux), so
            # decode it as yamux from the next frame boundary found. Routine (agents connect
            # long before a campaign), so counted rather than warned about.
            self.stats.joined_midway += 1
            self._start(RPC_MULTIPLEX_V2, syncing=True)

    # -- mode ------------------------------------------------------------------------------

    def _start(self, mode: int, syncing: bool = False) -> None:
        self.mode = mode
        self._feeds = [None, None]
        if mode in (RPC_MULTIPLEX, RPC_MULTIPLEX_V2):
            self.framers = (_YamuxFramer(self, 0, syncing), _YamuxFramer(self, 1, syncing))
        elif mode == RPC_NOMAD:
            self.plain = (
                _MsgpackRpcStream(self, 0, 0, True, False),
                _MsgpackRpcStream(self, 0, 1, False, False),
            )
        else:
            self.skipped = True
            why = {
                RPC_TLS: "encrypted: cannot decode (TLS, 0x04)",
                RPC_RAFT: "raft (0x02)",
                RPC_STREAMING: "streaming RPC (0x05)",
            }.get(mode, f"unknown RPC mode byte {mode:#04x}")
            self.stats.skip(why)
            if mode == RPC_TLS:
                self.stats.warnings.append(
                    f"RPC connection {self.label} is TLS: {ENCRYPTED}; skipped "
                    "(or turn TLS off in the lab to measure RPC phases)"
                )
            elif mode not in (RPC_RAFT, RPC_STREAMING):
                self.stats.warnings.append(
                    f"RPC connection {self.label} starts with byte {mode:#04x}, not a Nomad "
                    "RPC mode; skipped"
                )

    # -- tcp.StreamHandler -----------------------------------------------------------------

    def data(self, direction: int, t_ns: int, data: bytes) -> None:
        feed = self._feeds[direction]
        if feed is not None:
            feed(t_ns, data)  # mode known, TLS checked: straight to the framer / stream
            return
        self._data(direction, t_ns, data)
        if (
            not self.skipped
            and self.mode is not None
            and (self.conn.syn_seen or self._tls_checked[direction])
        ):
            if self.framers is not None:
                self._feeds[direction] = self.framers[direction].feed
            elif self.plain is not None:
                self._feeds[direction] = self.plain[direction].feed

    def _data(self, direction: int, t_ns: int, data: bytes) -> None:
        if self.skipped:
            return
        if not self.conn.syn_seen and not self._tls_checked[direction]:
            self._tls_checked[direction] = True
            if looks_like_tls(data, from_start=False):
                self.framers = self.plain = None
                self._start(RPC_TLS)  # joined midway into a TLS session
                return
        if self.mode is None:
            if direction == 1:
                self.early.append((direction, t_ns, data))
                return
            self._start(data[0])
            data = data[1:]
            if self.skipped:
                return
            early, self.early = self.early, []
            for d, t, b in early:
                self._route(d, t, b)
            if not data:
                return
        self._route(direction, t_ns, data)

    def _route(self, direction: int, t_ns: int, data: bytes) -> None:
        if self.framers is not None:
            self.framers[direction].feed(t_ns, data)
        elif self.plain is not None:
            self.plain[direction].feed(t_ns, data)

    def gap(self, direction: int, t_ns: int, missing: int) -> None:
        if self.skipped:
            return
        if self.mode is None:
            if direction == 0:
                # the mode byte itself may be lost: assume yamux and resync
                self.stats.warnings.append(
                    f"RPC connection {self.label}: the start was not captured; decoding it as yamux"
                )
                self._start(RPC_MULTIPLEX_V2, syncing=True)
            else:
                self.early.clear()
            return
        if self.framers is not None:
            self.framers[direction].gap(missing)
        elif self.plain is not None:
            self.plain[direction].gap()

    def close(self, t_ns: int, reason: str) -> None:
        # requests still pending were already emitted; their responses are not in the capture
        self.pending.clear()
        # Break the connection <-> framer/stream reference cycles (owner back-references,
        # bound feed methods) so a closed decoder is freed by reference counting alone,
        # without the analyzer having to run full garbage collections.
        for s in self.streams.values():
            s.owner = None
        for pair in (self.framers, self.plain):
            for x in pair or ():
                x.owner = None
        self.streams = {}
        self._feeds = [None, None]

    # -- yamux callbacks -------------------------------------------------------------------

    def yamux_gap(self, direction: int) -> None:
        for (_sid, d), s in self.streams.items():
            if d == direction:
                s.gap()

    def yamux_frame(
        self,
        direction: int,
        ftype: int,
        flags: int,
        stream: int,
        payload: bytes,
        pieces: list[tuple[int, int, int]],
    ) -> None:
        """One yamux frame; `pieces`: (t_ns, from, to) of the segments its payload came in."""
        self.frame(direction, ftype, flags, stream, payload, 0, pieces)

    def frame(
        self,
        direction: int,
        ftype: int,
        flags: int,
        stream: int,
        payload: bytes,
        t_ns: int,
        pieces: list[tuple[int, int, int]] | None,
    ) -> None:
        """yamux_frame, with `pieces` None when the whole payload came at `t_ns`."""
        if stream == 0:
            return  # session-level Ping / GoAway
        if flags & FLAG_SYN and ftype in (YAMUX_DATA, YAMUX_WINDOW_UPDATE):
            self._open_stream(stream, opener=direction, fresh=True)
        if flags & FLAG_RST:
            self._drop_stream(stream)
            return
        if ftype == YAMUX_DATA and payload:
            s = self.streams.get((stream, direction))
            if s is None:
                # stream opened before the capture (or its SYN lost): odd ids are the dialler's
                self._open_stream(stream, opener=0 if stream % 2 else 1, fresh=False)
                s = self.streams[(stream, direction)]
            if pieces is None:
                s.feed(t_ns, payload)
            elif len(pieces) == 1 and pieces[0][2] - pieces[0][1] == len(payload):
                s.feed(pieces[0][0], payload)  # the whole frame came in one segment
            else:
                s.feed_pieces(pieces, payload)

    def _open_stream(self, stream: int, opener: int, fresh: bool) -> None:
        v2 = self.mode == RPC_MULTIPLEX_V2
        for d in (0, 1):
            s = _MsgpackRpcStream(
                self,
                stream,
                d,
                is_request=(d == opener),
                expect_mode_byte=v2 and fresh and d == opener,
            )
            if not fresh:
                s.sync_buf = bytearray()  # mid-stream: wait for a header map
            self.streams[(stream, d)] = s

    def _drop_stream(self, stream: int) -> None:
        for d in (0, 1):
            self.streams.pop((stream, d), None)

    # -- output ----------------------------------------------------------------------------

    def _prune(self, method: Any, body: Any) -> Any:
        assert self.body_fields is not None
        schema = self.body_fields.get(method) if isinstance(method, str) else None
        return None if schema is None else prune(body, schema)

    def emit(
        self, s: _MsgpackRpcStream, header: dict[bytes, Any], body: Any, t_first: int, t_last: int
    ) -> None:
        raw = header.get(_K_METHOD, b"")
        # a handful of method names recur millions of times: decode each once
        method = _METHOD_NAMES.get(raw) if type(raw) is bytes else None
        if method is None:
            method = _utf8(raw) if type(raw) is bytes else to_py(raw)
            if type(raw) is bytes and type(method) is str and len(_METHOD_NAMES) < 4096:
                _METHOD_NAMES[raw] = method
        seq = header.get(_K_SEQ, 0)
        err = header.get(_K_ERROR, b"")
        if err == b"":  # noqa: SIM108 - requests and successful responses: no call
            err = ""
        else:
            err = _utf8(err) if type(err) is bytes else to_py(err)
        fields = self.body_fields
        if fields is None:
            body = to_py(body)
        else:  # _prune inline
            schema = fields.get(method) if isinstance(method, str) else None
            body = None if schema is None else prune(body, schema)
        msg = RpcMessage(
            method if isinstance(method, str) else repr(method),
            "request" if s.is_request else "response",
            seq,
            err if isinstance(err, str) else repr(err),
            body,
            t_first,
            t_last,
            self._tuple,
            self.conn.id,
            s.stream,
            self._senders[s.direction],
        )
        key = (s.stream, seq)
        if s.is_request:
            self.pending[key] = msg
        else:
            msg.request = self.pending.pop(key, None)
            if msg.request is None:
                self.stats.unpaired_responses += 1
        self.stats.messages += 1
        self.on_message(msg)
