"""Incremental HTTP/1.1 parser for reassembled TCP connections (RFC 9112).

`HttpConnection` is a `tcp.StreamHandler`: requests on direction 0 (client to server),
responses on direction 1, matched to requests in order (keep-alive and pipelining), with
Content-Length, chunked and read-until-close bodies, HEAD and 1xx/204/304 responses without a
body. Each finished message goes to `on_message(HttpMessage)`.

Secrets: the values of credential headers (`SECRET_HEADERS`: x-auth-token, x-subject-token,
authorization, x-nomad-token, cookie, ...) are dropped while parsing and never stored.

Gaps (bytes the capture missed): inside a Content-Length body the hole is skipped and the
message is marked `complete=False`; anywhere else the message in progress is dropped
(`dropped` counter) and the parser resyncs on the next start line. Bytes that are not HTTP are
skipped the same way and counted in `garbage_bytes`. Nothing here raises on bad input.

Analyzer stage 3, decoders (vimprof/analyzer/__init__.py): byte chunks of a connection in
(tcp.StreamHandler), `HttpMessage`s out.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from vimprof.analyzer.decoders.timemap import TimeMap
from vimprof.analyzer.decoders.tls import looks_like_tls
from vimprof.analyzer.tcp import Connection

SECRET_HEADERS = frozenset(
    {
        "x-auth-token",
        "x-subject-token",
        "authorization",
        "x-nomad-token",
        "cookie",
        "set-cookie",
        "proxy-authorization",
        "x-vault-token",
        "x-consul-token",
    }
)
BODY_LIMIT = 64 * 1024  # body bytes kept per message
HEADER_LIMIT = 64 * 1024  # a header section longer than this is not HTTP

_REQ_LINE = re.compile(rb"([A-Z][A-Z-]{0,19}) (\S{1,8192}) HTTP/(1\.[01])\Z")
_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) (\d{3})(?: (.*))?\Z", re.S)
_REQ_SYNC = re.compile(
    rb"(?:GET|PUT|POST|DELETE|HEAD|OPTIONS|PATCH|CONNECT|TRACE) /?\S* HTTP/1\.[01]\r?\n"
)
_RESP_SYNC = re.compile(rb"HTTP/1\.[01] \d{3}[ \r\n]")


@dataclass
class HttpMessage:
    """One HTTP request or response as captured.

    kind: "request" | "response"; method/path for requests, status/reason for responses;
    headers: lower-case names -> values (repeated headers joined with ", "; secrets dropped);
    body: the first BODY_LIMIT bytes (de-chunked), body_len: full body length seen;
    t_first_ns / t_last_ns: capture times of the packets carrying the first and last byte
    (ns since epoch); complete: false when a capture gap cut the body; conn: (client ip,
    client port, server ip, server port); request: for a response, the request it answers.
    """

    kind: str
    t_first_ns: int
    t_last_ns: int = 0
    method: str = ""
    path: str = ""
    status: int = 0
    reason: str = ""
    version: str = "1.1"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    body_len: int = 0
    complete: bool = True
    conn: tuple[str, int, str, int] = ("", 0, "", 0)
    conn_id: int = 0
    request: HttpMessage | None = None


# parser states
_START, _HEADERS, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _UNTIL_CLOSE = range(8)
_RESYNC = 8


class HttpStream:
    """Parser of one direction. `is_request` selects request or status lines.

    `peek_request()` is asked for the request a response answers (to know HEAD), and
    `emit(msg)` gets every finished message.
    """

    def __init__(
        self,
        is_request: bool,
        emit: Callable[[HttpMessage], None],
        peek_request: Callable[[], HttpMessage | None] = lambda: None,
        body_limit: int = BODY_LIMIT,
    ):
        self.is_request = is_request
        self.emit = emit
        self.peek_request = peek_request
        self.body_limit = body_limit
        self.buf = bytearray()
        self.base = 0  # absolute offset of buf[0]
        self.times = TimeMap()
        self.state = _START
        self.msg: HttpMessage | None = None
        self.remaining = 0
        self.garbage_bytes = 0
        self.dropped = 0
        self.messages = 0

    # -- input -----------------------------------------------------------------------------

    def feed(self, t_ns: int, data: bytes) -> None:
        self.times.add(t_ns, len(data))
        self.buf += data
        self._run()

    def gap(self, missing: int) -> None:
        """`missing` bytes (or -1, unknown) of this direction were never captured."""
        if (
            self.state == _BODY
            and self.msg is not None
            and 0 < missing <= self.remaining
            and not self.buf
        ):
            self.remaining -= missing
            self.msg.body_len += missing
            self.msg.complete = False
            self._skip_abs(missing)
            if self.remaining == 0:
                self._finish(self.base - 1)
            return
        if self.msg is not None or (self.state == _HEADERS and self.buf):
            self.dropped += 1
        self.msg = None
        self.garbage_bytes += len(self.buf)
        self._consume(len(self.buf))
        self._skip_abs(max(missing, 0))
        self.state = _RESYNC

    def close(self) -> None:
        """The connection ended: a read-until-close body is complete, anything else is cut."""
        if self.state == _UNTIL_CLOSE and self.msg is not None:
            self._finish(self.base - 1 if self.base else 0)
        elif self.msg is not None or (self.state == _HEADERS and self.buf):
            self.dropped += 1
        self.msg = None
        self.state = _START

    # -- machinery -------------------------------------------------------------------------

    def _skip_abs(self, n: int) -> None:
        self.base += n
        self.times.skip(n)

    def _consume(self, n: int) -> None:
        del self.buf[:n]
        self.base += n
        self.times.trim(self.base)

    def _finish(self, last_off: int) -> None:
        msg = self.msg
        assert msg is not None
        msg.t_last_ns = self.times.time_at(last_off)
        self.msg = None
        self.state = _START
        self.messages += 1
        self.emit(msg)

    def _take_body(self, buf: bytearray) -> bool:
        """Move up to `remaining` bytes of `buf` into the body; True once none remain."""
        n = min(self.remaining, len(buf))
        self._add_body(buf[:n])
        self._consume(n)
        self.remaining -= n
        return self.remaining == 0

    def _add_body(self, chunk: bytes | bytearray) -> None:
        msg = self.msg
        assert msg is not None
        room = self.body_limit - len(msg.body)
        if room > 0:
            msg.body += bytes(chunk[:room])
        msg.body_len += len(chunk)

    def _run(self) -> None:
        while True:
            st = self.state
            buf = self.buf
            if st == _START:
                # tolerate stray CRLFs between messages (RFC 9112 2.2)
                i = 0
                while i < len(buf) and buf[i] in (13, 10):
                    i += 1
                if i:
                    self._consume(i)
                if not buf:
                    return
                self.msg = None
                self.state = _HEADERS
            elif st == _HEADERS:
                end = buf.find(b"\r\n\r\n")
                sep = 4
                if end < 0:
                    alt = buf.find(b"\n\n")
                    if alt >= 0:
                        end, sep = alt, 2
                if end < 0:
                    if len(buf) > HEADER_LIMIT:
                        self._garbage()
                        continue
                    if not self._plausible_start():
                        self._garbage()
                        continue
                    return
                if not self._headers(bytes(buf[:end]), end + sep):
                    self._garbage()
                    continue
            elif st == _BODY:
                if not buf:
                    return
                if self._take_body(buf):
                    self._finish(self.base - 1)
            elif st == _CHUNK_SIZE:
                eol = buf.find(b"\n")
                if eol < 0:
                    if len(buf) > 1024:
                        self._garbage()
                        continue
                    return
                line = bytes(buf[:eol]).strip().split(b";", 1)[0].strip()
                try:
                    size = int(line, 16)
                except ValueError:
                    self._garbage()
                    continue
                self._consume(eol + 1)
                if size == 0:
                    self.state = _TRAILERS
                else:
                    self.remaining = size
                    self.state = _CHUNK_DATA
            elif st == _CHUNK_DATA:
                if not buf:
                    return
                if self._take_body(buf):
                    self.state = _CHUNK_CRLF
            elif st == _CHUNK_CRLF:
                if not buf:
                    return
                if buf[0] == 10:
                    self._consume(1)
                elif buf[0] == 13 and len(buf) < 2:
                    return
                elif buf[0] == 13 and buf[1] == 10:
                    self._consume(2)
                else:
                    self._garbage()
                    continue
                self.state = _CHUNK_SIZE
            elif st == _TRAILERS:
                eol = buf.find(b"\n")
                if eol < 0:
                    if len(buf) > HEADER_LIMIT:
                        self._garbage()
                        continue
                    return
                line = bytes(buf[:eol]).strip()
                self._consume(eol + 1)
                if not line:
                    self._finish(self.base - 1)
            elif st == _UNTIL_CLOSE:
                if not buf:
                    return
                self._add_body(buf)
                self._consume(len(buf))
            elif st == _RESYNC:
                rx = _REQ_SYNC if self.is_request else _RESP_SYNC
                m = rx.search(buf)
                if m is None:
                    keep = 64
                    if len(buf) > keep:
                        self.garbage_bytes += len(buf) - keep
                        self._consume(len(buf) - keep)
                    return
                self.garbage_bytes += m.start()
                self._consume(m.start())
                self.state = _START
            else:  # pragma: no cover - all states handled above
                return

    def _plausible_start(self) -> bool:
        """Whether the buffered head can still become a start line (else resync now)."""
        head = bytes(self.buf[:24])
        if self.is_request:
            m = re.match(rb"[A-Z][A-Z-]{0,19}( |\Z)", head)
            return m is not None
        want = b"HTTP/1."
        return head[: len(want)] == want[: len(head)]

    def _garbage(self) -> None:
        if self.msg is not None:
            self.dropped += 1
            self.msg = None
        # skip one byte so the resync search cannot find the same place again
        self.garbage_bytes += 1
        self._consume(1)
        self.state = _RESYNC

    def _headers(self, head: bytes, total: int) -> bool:
        lines = head.replace(b"\r\n", b"\n").split(b"\n")
        start = lines[0]
        t_first = self.times.time_at(self.base)
        if self.is_request:
            m = _REQ_LINE.match(start)
            if not m:
                return False
            msg = HttpMessage(
                "request",
                t_first,
                method=m.group(1).decode("ascii"),
                path=m.group(2).decode("latin-1"),
                version=m.group(3).decode("ascii"),
            )
        else:
            m = _STATUS_LINE.match(start)
            if not m:
                return False
            msg = HttpMessage(
                "response",
                t_first,
                status=int(m.group(2)),
                reason=(m.group(3) or b"").decode("latin-1").strip(),
                version=m.group(1).decode("ascii"),
            )
        headers: dict[str, str] = {}
        cache = _LINE_CACHE
        for line in lines[1:]:
            kv = cache.get(line)
            if kv is None:
                kv = _header_line(line)
                if kv is not _SECRET:  # never keep a credential around
                    if len(cache) >= _LINE_CACHE_SIZE:
                        cache.clear()
                    cache[line] = kv
            if kv is _SECRET:
                continue
            if kv is _BAD:
                return False
            key, val = kv
            headers[key] = f"{headers[key]}, {val}" if key in headers else val
        msg.headers = headers
        self.msg = msg
        self._consume(total)
        te = headers.get("transfer-encoding", "").lower()
        cl = headers.get("content-length")
        length: int | None = None
        if cl is not None:
            try:
                length = int(cl.split(",")[0].strip())
            except ValueError:
                return False
            if length < 0:
                return False
        if msg.kind == "response":
            req = self.peek_request()
            if 100 <= msg.status < 200:
                # interim response: not the answer, no body
                self.msg = None
                self.state = _START
                return True
            if msg.status in (204, 304) or (req is not None and req.method == "HEAD"):
                self._finish(self.base - 1)
                return True
            if req is not None and req.method == "CONNECT" and 200 <= msg.status < 300:
                self._finish(self.base - 1)
                self.state = _RESYNC  # tunnel: what follows is not HTTP
                return True
        if "chunked" in te:
            self.state = _CHUNK_SIZE
        elif length is not None:
            if length == 0:
                self._finish(self.base - 1)
            else:
                self.remaining = length
                self.state = _BODY
        elif msg.kind == "response":
            self.state = _UNTIL_CLOSE
        else:
            self._finish(self.base - 1)
        return True


# Parsed header lines (the same lines recur in every message of a connection and across
# connections: content types, user agents, hosts), bounded.
_LINE_CACHE: dict[bytes, tuple[str, str] | object] = {}
_LINE_CACHE_SIZE = 4096
_SECRET = object()  # a credential header: dropped
_BAD = object()  # not a header line: the head is not HTTP


def _header_line(line: bytes) -> tuple[str, str] | object:
    """(lower-case name, value) of one header line, or _SECRET, or _BAD."""
    name, sep, value = line.partition(b":")
    if not sep or not name or name != name.strip():
        return _BAD
    key = name.decode("latin-1").lower()
    if key in SECRET_HEADERS:
        return _SECRET
    return key, value.strip().decode("latin-1")


class HttpConnection:
    """tcp.StreamHandler for one HTTP connection; pairs responses with requests in order.

    `on_message(msg)` gets requests when they end and responses (with `request` set when
    one was pending). Counters: `requests`, `responses`, `unpaired`, plus the streams'
    `garbage_bytes` and `dropped`. `encrypted` is set when the first bytes of a direction
    are a TLS record (tls.looks_like_tls): the connection is then not parsed at all.
    """

    def __init__(
        self,
        conn: Connection,
        on_message: Callable[[HttpMessage], None],
        body_limit: int = BODY_LIMIT,
    ):
        self.conn = conn
        self.on_message = on_message
        self.pending: deque[HttpMessage] = deque()
        self.requests = 0
        self.responses = 0
        self.unpaired = 0
        self.encrypted = False  # TLS seen: nothing of this connection is parsed
        self._checked = [False, False]
        self.streams = (
            HttpStream(True, self._request, body_limit=body_limit),
            HttpStream(False, self._response, self._peek, body_limit=body_limit),
        )

    def _stamp(self, msg: HttpMessage) -> None:
        msg.conn = self.conn.tuple
        msg.conn_id = self.conn.id

    def _peek(self) -> HttpMessage | None:
        return self.pending[0] if self.pending else None

    def _request(self, msg: HttpMessage) -> None:
        self._stamp(msg)
        self.requests += 1
        self.pending.append(msg)
        self.on_message(msg)

    def _response(self, msg: HttpMessage) -> None:
        self._stamp(msg)
        self.responses += 1
        if self.pending:
            msg.request = self.pending.popleft()
        else:
            self.unpaired += 1
        self.on_message(msg)

    # tcp.StreamHandler
    def data(self, direction: int, t_ns: int, data: bytes) -> None:
        if self.encrypted:
            return
        if not self._checked[direction]:
            self._checked[direction] = True
            if looks_like_tls(data, from_start=False):
                self.encrypted = True
                return
        self.streams[direction].feed(t_ns, data)

    def gap(self, direction: int, t_ns: int, missing: int) -> None:
        if self.encrypted:
            return
        stream = self.streams[direction]
        stream.gap(missing)
        if stream.state == _RESYNC:
            # a request or response may be lost: in-order pairing cannot be trusted any more
            self.pending.clear()

    def close(self, t_ns: int, reason: str) -> None:
        for s in self.streams:
            s.close()
            # the streams' callbacks are bound methods of this connection: a reference
            # cycle; cut it so the closed decoder is freed without a garbage collection
            s.emit = s.peek_request = None

    @property
    def garbage_bytes(self) -> int:
        return sum(s.garbage_bytes for s in self.streams)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.streams)
