"""The analyzer pipeline: captures -> TCP streams -> HTTP / Nomad RPC / AMQP -> timelines.jsonl.

`analyze_run(run, extra_captures=(), hooks_offset_ns=0, tolerance_ms=50)` reads
`run/capture.pcap` (plus extra captures, each optionally with a clock offset, merged by
time), joins job ids / server ids with `requests.jsonl` (its "run" values go into the
timelines), merges hooks.jsonl and vim-events.jsonl (analyzer/enrich.py), cross-checks, and
rewrites `run/timelines.jsonl` from scratch (derived data). `analyze_capture(path | [(path,
offset_ns), ...], ...)` returns the timeline dicts (shape: vimprof/phases.py) of Nomad
allocations ("vim": "nomad", nomad_phases.py) and Nova servers ("vim": "nova",
nova_phases.py) alike. `decode_capture` gives the decoded messages (tests, debugging);
`stream_capture` hands them to callbacks as they complete (the analysis itself: memory stays
bounded by open connections and instances, not by capture size). Each instance's timeline is
emitted, enriched and written as soon as the instance is finished, its state dropped
(nomad_phases / nova_phases "Streaming"; `analyze(..., on_timeline=f)`, TimelineSpool); live
mode (`analyze_run(run, follow=Follower(run))`): analyzer/follow.py.

Errors: VimprofError when no capture can be read (missing, not pcap/pcapng, a classic pcap
with a link type vimprof cannot decode); with several captures an unreadable one is a
warning. A truncated capture gives partial timelines and a warning; TLS on a VIM port is
reported ("encrypted: cannot decode, use hooks or VIM events"), never parsed; bytes on the
VIM ports that do not decode are skipped and counted in the warnings; a capture without VIM
traffic says so. Nothing else is raised for bad capture content: a decoder failure on one
connection disables that connection and becomes a warning.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vimprof.analyzer.amqp import AmqpConnection, AmqpMessage, AmqpStats
from vimprof.analyzer.enrich import DEFAULT_TOLERANCE_MS, Enricher, read_jsonl
from vimprof.analyzer.http import HttpConnection, HttpMessage
from vimprof.analyzer.nomad_events import timelines_from_events
from vimprof.analyzer.nomad_phases import IDLE_NS, NomadTimelines, timeline_key
from vimprof.analyzer.nomad_rpc import BODY_FIELDS, NomadRpcConnection, RpcMessage, RpcStats
from vimprof.analyzer.nova_phases import AMQP_PORTS, NovaTimelines
from vimprof.analyzer.nova_phases import HTTP_PORTS as NOVA_HTTP_PORTS
from vimprof.analyzer.pcap import CaptureSource, MergedReader
from vimprof.analyzer.tcp import Connection, StreamHandler, TcpReassembler
from vimprof.analyzer.tls import ENCRYPTED
from vimprof.errors import VimprofError
from vimprof.rundir import CAPTURE, HOOKS, REQUESTS, TIMELINES, VIM_EVENTS, RunDir

NOMAD_HTTP_PORTS = (4646,)
NOMAD_RPC_PORTS = (4647,)
HTTP_PORTS = NOMAD_HTTP_PORTS + NOVA_HTTP_PORTS  # Nomad API, nova-api, keystone, glance, ...


@dataclass(frozen=True)
class Ports:
    """TCP ports decoded as HTTP and as Nomad RPC: the defaults plus a deployment's own
    (`vimprof analyze --http-port/--rpc-port`, or the campaign's manifest `capture.ports`)."""

    extra_http: tuple[int, ...] = ()
    extra_rpc: tuple[int, ...] = ()

    @property
    def http(self) -> tuple[int, ...]:
        return HTTP_PORTS + tuple(p for p in self.extra_http if p not in HTTP_PORTS)

    @property
    def nomad_http(self) -> tuple[int, ...]:
        """The HTTP ports that are Nomad's API (the others are OpenStack's)."""
        return NOMAD_HTTP_PORTS + tuple(p for p in self.extra_http if p not in HTTP_PORTS)

    @property
    def rpc(self) -> tuple[int, ...]:
        return NOMAD_RPC_PORTS + tuple(p for p in self.extra_rpc if p not in NOMAD_RPC_PORTS)

    @classmethod
    def of_run(cls, run: RunDir, http: Iterable[int] = (), rpc: Iterable[int] = ()) -> Ports:
        """`http`/`rpc` plus the ports the run's manifest says the campaign captured."""
        got = ((run.manifest().get("hosts") or {}).get("capture") or {}).get("ports") or {}
        return cls(tuple(http) + tuple(got.get("http") or ()),
                   tuple(rpc) + tuple(got.get("rpc") or ()))


@dataclass
class AnalysisResult:
    """What one analysis produced.

    counts: packets (TCP segments read), records (capture records), connections (on the VIM
    ports), http_messages, rpc_messages, amqp_messages, timelines, incomplete (timelines with
    complete=false), tcp_gaps, snapped (segments cut by the snaplen), encrypted_connections,
    crosscheck_disagreements (failed checks over all timelines); warnings: lines for the
    user; truncated: the capture ends inside a record; timelines: the records written
    (read back from `path` on first access, so that the analysis itself holds none).
    """

    _timelines: list[dict[str, Any]] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False
    path: Path | None = None

    @property
    def timelines(self) -> list[dict[str, Any]]:
        if self._timelines is None:
            self._timelines = (
                [json.loads(line)
                 for line in self.path.read_text(encoding="utf-8").splitlines() if line]
                if self.path is not None and self.path.is_file() else []
            )
        return self._timelines

    def summary(self) -> str:
        """One line for the terminal, e.g. "4 timelines (1 incomplete) from 519 packets, ..."."""
        c = self.counts
        line = (
            f"{c.get('timelines', 0)} timelines ({c.get('incomplete', 0)} incomplete) from "
            f"{c.get('packets', 0)} packets, {c.get('connections', 0)} connections, "
            f"{c.get('http_messages', 0)} HTTP and {c.get('rpc_messages', 0)} RPC messages"
        )
        if c.get("amqp_messages"):
            line += f", {c['amqp_messages']} AMQP messages"
        if c.get("crosscheck_disagreements"):
            line += f"; {c['crosscheck_disagreements']} cross-check disagreement(s)"
        if c.get("foreign_allocations"):
            line += (f"; {c['foreign_allocations']} instance(s) of other campaigns (jobs, "
                     "servers) ignored")
        return line + (" (capture truncated)" if self.truncated else "")


@dataclass
class Decoded:
    """Messages decoded from one capture, in the order they completed."""

    http: list[HttpMessage] = field(default_factory=list)
    rpc: list[RpcMessage] = field(default_factory=list)
    amqp: list[AmqpMessage] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False


class _Guarded:
    """Wraps a decoder so that a failure on one connection cannot stop the analysis."""

    def __init__(
        self,
        inner: StreamHandler,
        conn: Connection,
        errors: list[str],
        on_close: Callable[[StreamHandler], None] | None = None,
    ):
        self.inner = inner
        self._data = inner.data
        self.conn = conn
        self.errors = errors
        self.on_close = on_close
        self.dead = False

    def _fail(self, e: Exception) -> None:
        self.dead = True
        self.errors.append(
            "decoder failure on connection {}:{} -> {}:{} ({}: {}); rest of it skipped".format(
                *self.conn.tuple, type(e).__name__, str(e)[:200]
            )
        )

    def data(self, direction: int, t_ns: int, data: bytes) -> None:
        if not self.dead:
            try:
                self._data(direction, t_ns, data)
            except SpoolError:
                raise  # the user's to act on (a timeline that cannot be written)
            except Exception as e:  # noqa: BLE001 - contain decoder bugs per connection
                self._fail(e)

    def gap(self, direction: int, t_ns: int, missing: int) -> None:
        if not self.dead:
            try:
                self.inner.gap(direction, t_ns, missing)
            except SpoolError:
                raise  # the user's to act on (a timeline that cannot be written)
            except Exception as e:  # noqa: BLE001
                self._fail(e)

    def close(self, t_ns: int, reason: str) -> None:
        if not self.dead:
            try:
                self.inner.close(t_ns, reason)
            except SpoolError:
                raise  # the user's to act on (a timeline that cannot be written)
            except Exception as e:  # noqa: BLE001
                self._fail(e)
        if self.on_close is not None:
            self.on_close(self.inner)


def _sources(capture: CaptureSource | Iterable[CaptureSource]) -> list[CaptureSource]:
    if isinstance(capture, str | Path | tuple):
        return [capture]
    return list(capture)


def decode_capture(
    path: CaptureSource | Iterable[CaptureSource],
    http_ports: Iterable[int] = HTTP_PORTS,
    rpc_ports: Iterable[int] = NOMAD_RPC_PORTS,
    amqp_ports: Iterable[int] = AMQP_PORTS,
) -> Decoded:
    """HTTP messages (on `http_ports`), Nomad RPC messages (on `rpc_ports`) and AMQP
    messages (on `amqp_ports`) of a capture, all held in lists (see stream_capture).

    `path`: one capture file, or a list of files / (file, clock offset ns) pairs merged by
    corrected time (pcap.MergedReader). Raises VimprofError if no file can be read.
    """
    out = Decoded()
    d = stream_capture(path, out.http.append, out.rpc.append, out.amqp.append,
                       http_ports, rpc_ports, amqp_ports)
    d.http, d.rpc, d.amqp = out.http, out.rpc, out.amqp
    return d


class _Totals:
    """Counters harvested from decoders when their connection closes (then dropped)."""

    def __init__(self) -> None:
        self.http_garbage = 0
        self.http_dropped = 0
        self.http_messages = 0
        self.tls: list[tuple[str, int, str, int]] = []

    def closed(self, handler: StreamHandler) -> None:
        if isinstance(handler, HttpConnection):
            self.http_messages += handler.requests + handler.responses
            self.http_garbage += handler.garbage_bytes
            self.http_dropped += handler.dropped
            if handler.encrypted:
                self.tls.append(handler.conn.tuple)


def stream_capture(
    path: CaptureSource | Iterable[CaptureSource],
    on_http: Callable[[HttpMessage], None],
    on_rpc: Callable[[RpcMessage], None],
    on_amqp: Callable[[AmqpMessage], None],
    http_ports: Iterable[int] = HTTP_PORTS,
    rpc_ports: Iterable[int] = NOMAD_RPC_PORTS,
    amqp_ports: Iterable[int] = AMQP_PORTS,
    rpc_body_fields: dict[str, Any] | None = None,
) -> Decoded:
    """Decode a capture, handing each message to its callback as it completes (streaming:
    nothing is kept here; a closed connection's decoder is dropped). Returns a Decoded with
    counts, warnings and truncated (its message lists empty). VimprofError as decode_capture.
    `rpc_body_fields`: decode only these parts of Nomad RPC bodies (nomad_rpc.BODY_FIELDS).
    """
    http_ports = frozenset(http_ports)
    rpc_ports = frozenset(rpc_ports)
    amqp_ports = frozenset(amqp_ports)
    out = Decoded()
    stats = RpcStats()
    astats = AmqpStats()
    errors: list[str] = []
    totals = _Totals()  # (HTTP messages counted per connection, RPC ones in stats)

    def factory(conn: Connection) -> StreamHandler | None:
        port = conn.server[1]
        if port in http_ports:
            return _Guarded(HttpConnection(conn, on_http), conn, errors, totals.closed)
        if port in rpc_ports:
            return _Guarded(
                NomadRpcConnection(conn, on_rpc, stats, rpc_body_fields), conn, errors
            )
        if port in amqp_ports:
            return _Guarded(AmqpConnection(conn, on_amqp, astats), conn, errors)
        return None

    ports = http_ports | rpc_ports | amqp_ports
    tcp = TcpReassembler(factory, server_ports=ports, keep_connections=False)
    with MergedReader(_sources(path)) as reader:
        # Decoding allocates millions of short-lived objects: collecting the youngest
        # generation less often saves ~5% (cycles, e.g. closed decoders, are still collected).
        gc_threshold = gc.get_threshold()
        gc.set_threshold(max(gc_threshold[0], 100_000), *gc_threshold[1:])
        try:
            # the packet loop; idle connections expire every 16384 packets
            last_t = tcp.run(reader, ports, expire_every=0x4000)
            tcp.finish(last_t)
        finally:
            gc.set_threshold(*gc_threshold)
        out.truncated = reader.truncated
        out.warnings.extend(reader.warnings)
        out.counts.update(
            records=reader.records,
            packets=reader.packets,
            skipped_records=reader.skipped,
            snapped=reader.snapped,
        )
    out.counts.update(
        connections=tcp.vim_connections,
        tcp_gaps=tcp.gaps,
        retransmitted_bytes=tcp.retransmitted_bytes,
        http_messages=totals.http_messages,
        rpc_messages=stats.messages,
        amqp_messages=astats.messages,
        rpc_lost_messages=stats.lost_messages,
        rpc_joined_midway=stats.joined_midway,
    )
    if reader.snapped:
        out.warnings.append(
            f"{reader.snapped} TCP segments were cut by the capture's snaplen; "
            "capture with `tcpdump -s 0` to keep whole packets"
        )
    if tcp.gaps:
        out.warnings.append(
            f"{tcp.gaps} gaps in TCP streams (packets the capture missed); "
            "messages across them are lost"
        )
    if totals.tls:
        out.counts["encrypted_connections"] = len(totals.tls)
        out.warnings.append(
            "{} HTTP connection(s) are TLS ({}:{} -> {}:{} first): {}".format(
                len(totals.tls), *totals.tls[0], ENCRYPTED
            )
        )
    if totals.http_garbage or totals.http_dropped:
        out.warnings.append(
            f"HTTP: {totals.http_garbage} bytes that are not HTTP skipped, "
            f"{totals.http_dropped} messages cut short dropped"
        )
    if stats.garbage_bytes or stats.lost_messages:
        out.warnings.append(
            f"Nomad RPC: {stats.garbage_bytes} bytes that do not decode skipped, "
            f"{stats.lost_messages} messages lost"
        )
    if astats.garbage_bytes or astats.lost_messages:
        out.warnings.append(
            f"AMQP: {astats.garbage_bytes} bytes that are not AMQP 0-9-1 frames skipped, "
            f"{astats.lost_messages} messages lost"
        )
    if astats.encrypted:
        out.counts["encrypted_connections"] = (
            out.counts.get("encrypted_connections", 0) + astats.encrypted
        )
    for why, k in sorted(stats.skipped_connections.items()):
        if why.startswith("streaming"):
            continue  # normal traffic (logs, exec), not a problem
        out.warnings.append(f"Nomad RPC: {k} connection(s)/stream(s) skipped: {why}")
    seen: set[str] = set()
    for w in stats.warnings + astats.warnings + errors:
        if w not in seen:
            seen.add(w)
            out.warnings.append(w)
    if not tcp.vim_connections:
        out.warnings.append(
            "no TCP traffic on the VIM ports ({}) in the capture".format(
                ", ".join(str(p) for p in sorted(ports))
            )
        )
    return out


class _Builders:
    """Feeds streamed messages to the Nomad and Nova timeline builders as they complete.

    Requests are held only until their response arrives; those unanswered for IDLE_NS of
    capture time (or at the end) are handed over alone (their reply events are then
    missing). Each finished timeline goes to `emit` (nomad_phases "Streaming").
    """

    def __init__(
        self,
        emit: Callable[[dict[str, Any]], None],
        runs: dict[str, Any] | None = None,
        idle_ns: int = IDLE_NS,
        nomad_http_ports: Iterable[int] = NOMAD_HTTP_PORTS,
    ) -> None:
        self.nomad_http = frozenset(nomad_http_ports)  # the rest of HTTP is OpenStack's
        self.nomad = NomadTimelines(emit, runs, idle_ns=idle_ns)
        self.nova = NovaTimelines(emit, runs, idle_ns=idle_ns)
        self.pending_http: OrderedDict[int, HttpMessage] = OrderedDict()
        self.pending_rpc: OrderedDict[int, RpcMessage] = OrderedDict()
        self.idle_ns = idle_ns
        self.now = 0
        self._swept = 0

    def http(self, m: HttpMessage) -> None:
        self._clock(m.t_last_ns)
        if m.kind == "request":
            self.pending_http[id(m)] = m
            return
        req = m.request
        if req is None:
            return
        self.pending_http.pop(id(req), None)
        if req.conn[3] in self.nomad_http:
            self.nomad.add_http(m)
        else:
            self.nova.add_http(req, m)

    def rpc(self, m: RpcMessage) -> None:
        if m.t_last_ns > self.now:  # (_clock does nothing otherwise: saves the call)
            self._clock(m.t_last_ns)
        if m.direction == "request":
            self.pending_rpc[id(m)] = m
        elif m.request is not None:
            self.pending_rpc.pop(id(m.request), None)
        self.nomad.add_rpc(m)

    def amqp(self, m: AmqpMessage) -> None:
        self._clock(m.t_last_ns)
        self.nova.add_amqp(m)

    def _clock(self, t: int) -> None:
        if t > self.now:
            self.now = t
            if t - self._swept >= 1_000_000_000:
                self._swept = t
                self._expire(t - self.idle_ns)
                self.nova.tick(t)

    def _expire(self, before_ns: int) -> None:
        """Hand over the requests unanswered since before `before_ns` alone."""
        while self.pending_http:
            req = next(iter(self.pending_http.values()))
            if req.t_last_ns >= before_ns:
                break
            self.pending_http.popitem(last=False)
            self._http_alone(req)
        while self.pending_rpc:
            r = next(iter(self.pending_rpc.values()))
            if r.t_last_ns >= before_ns:
                break
            self.pending_rpc.popitem(last=False)
            self.nomad.add_rpc_request_only(r)

    def _http_alone(self, req: HttpMessage) -> None:
        if req.conn[3] in self.nomad_http:
            self.nomad.add_http_request_only(req)
        else:
            self.nova.add_http(req, None)

    def live(self) -> dict[str, int]:
        """Sizes of the state held (bounded by open work, not by the capture's length)."""
        return {"pending_http": len(self.pending_http), "pending_rpc": len(self.pending_rpc),
                **{f"nomad_{k}": v for k, v in self.nomad.live().items()},
                **{f"nova_{k}": v for k, v in self.nova.live().items()}}

    def finish(self) -> None:
        """End of capture: hand over the unanswered requests, emit every timeline left."""
        for req in self.pending_http.values():
            self._http_alone(req)
        for r in self.pending_rpc.values():
            self.nomad.add_rpc_request_only(r)
        self.pending_http.clear()
        self.pending_rpc.clear()
        self.nomad.timelines()
        self.nova.timelines()


MAX_CROSSCHECK_WARNINGS = 100  # lines; the rest are counted (each timeline has its issues)


def analyze_capture(
    path: CaptureSource | Iterable[CaptureSource],
    job_runs: dict[str, Any] | None = None,
    *,
    hooks: Iterable[dict[str, Any]] = (),
    vim_events: Iterable[dict[str, Any]] = (),
    requests: Iterable[dict[str, Any]] = (),
    hooks_offset_ns: int = 0,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
) -> list[dict[str, Any]]:
    """Timeline dicts (vimprof/phases.py shape) of one capture or several merged ones.

    Nomad allocations ("vim": "nomad") and Nova servers ("vim": "nova") alike. `path`: a
    capture file, or a list of files / (file, clock offset ns) pairs (the offset is added
    to that file's timestamps). `job_runs`: job id (Nomad) or server uuid (Nova) -> run.
    `hooks`, `vim_events`, `requests`: records of the run's hooks.jsonl, vim-events.jsonl
    and requests.jsonl (see analyzer/enrich.py); with any of them each timeline gets a
    "crosscheck" dict. VimprofError as decode_capture. The list grows with the capture:
    for large ones use `analyze(..., on_timeline=...)` or analyze_run.
    """
    return analyze(
        path, job_runs, list(hooks), list(vim_events), list(requests), hooks_offset_ns,
        tolerance_ms,
    )[0]


def analyze(
    path: CaptureSource | Iterable[CaptureSource],
    job_runs: dict[str, Any] | None = None,
    hooks: list[dict[str, Any]] | None = None,
    vim_events: list[dict[str, Any]] | None = None,
    requests: list[dict[str, Any]] | None = None,
    hooks_offset_ns: int = 0,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
    on_timeline: Callable[[dict[str, Any]], None] | None = None,
    idle_ns: int = IDLE_NS,
    ports: Ports | None = None,
) -> tuple[list[dict[str, Any]], Decoded, list[str]]:
    """(timelines, Decoded counts/warnings, merge/cross-check warnings), streaming: the
    decoded messages are turned into events as they complete and never all held, and each
    instance's timeline is built, enriched (hooks, VIM events, cross-checks) and handed on
    as soon as the instance is finished (nomad_phases "Streaming"), its state dropped.

    `on_timeline(tl)`: receives each timeline in completion order, and the returned list is
    then empty (memory flat in capture size); without it the list is returned sorted by
    first event (timeline_key). `idle_ns`: capture time after which an instance without
    news is emitted as it is. `ports`: the deployment's own HTTP and RPC ports besides the
    defaults. VimprofError as decode_capture.
    """
    ports = ports or Ports()
    enricher = Enricher(hooks or (), vim_events or (), requests or (), hooks_offset_ns,
                        tolerance_ms)
    out: list[dict[str, Any]] = []
    checks: list[str] = []
    more = [0]
    sink = on_timeline or out.append

    # (No periodic gc.collect() here: closed decoders break their reference cycles in
    # close(), so memory stays flat with reference counting alone.)
    def emit(tl: dict[str, Any]) -> None:
        for w in enricher.apply(tl):
            if len(checks) < MAX_CROSSCHECK_WARNINGS:
                checks.append(w)
            else:
                more[0] += 1
        sink(tl)

    b = _Builders(emit, job_runs, idle_ns, ports.nomad_http)
    d = stream_capture(path, b.http, b.rpc, b.amqp, http_ports=ports.http,
                       rpc_ports=ports.rpc, rpc_body_fields=BODY_FIELDS)
    b.finish()
    out.sort(key=timeline_key)
    warnings: list[str] = []
    if b.nova.undecodable:
        warnings.append(f"AMQP: {b.nova.undecodable} message bodies are not oslo JSON; skipped")
    d.counts["nomad_late_messages"] = b.nomad.late  # about allocations already emitted
    warnings.extend(enricher.warnings())
    warnings.extend(checks)
    if more[0]:
        warnings.append(f"crosscheck: {more[0]} more disagreement(s); see the timelines' issues")
    return out, d, warnings


def _job_runs(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """job id (Nomad) / server uuid (Nova) -> the pusher's "run" value."""
    runs: dict[str, Any] = {}
    for rec in requests:
        for key in ("job_id", "server_id"):
            v = rec.get(key)
            if isinstance(v, str) and v:
                runs[v] = rec.get("run")
    return runs


def _belongs(timeline: dict[str, Any], job_runs: dict[str, Any]) -> bool:
    """Whether an allocation is one of this campaign's instances.

    A capture also shows allocations of other jobs in passing (an earlier campaign's last
    allocation reporting late, other users' jobs): with requests.jsonl only its jobs count;
    without it, an allocation counts once its job is known from the capture.
    """
    if timeline.get("vim") == "nova":
        return timeline["instance"] in job_runs if job_runs else True
    job = timeline.get("job")
    if job_runs:
        return job in job_runs
    return bool(job)


def write_timelines(path: Path, timelines: Iterable[dict[str, Any]]) -> None:
    """Write timelines.jsonl from scratch (atomically: a temp file then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for rec in timelines:
            fh.write(_line(rec))
    os.replace(tmp, path)


def _line(rec: dict[str, Any]) -> str:
    return json.dumps(rec, separators=(",", ":"), sort_keys=True) + "\n"


class SpoolError(VimprofError):
    """Timelines cannot be written (disk full, permissions): not contained per connection."""


class TimelineSpool:
    """Timelines written one by one to a temporary file beside `path`, then to `path` in
    timeline_key order (first event, instance) by `commit()`: memory holds one (key,
    offset, length) per timeline, not the timelines. `filter(tl)` decides what is kept;
    `counts`: timelines, foreign_allocations (filtered out), incomplete,
    crosscheck_disagreements.
    """

    def __init__(self, path: Path, keep: Callable[[dict[str, Any]], bool] | None = None):
        self.path = path
        self.keep = keep
        fd, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".spool", dir=path.parent)
        self._spool = Path(name)
        self._fh = os.fdopen(fd, "wb")
        self._index: list[tuple[int, str, int, int]] = []
        self.counts = {"timelines": 0, "foreign_allocations": 0, "incomplete": 0,
                       "crosscheck_disagreements": 0}

    def add(self, tl: dict[str, Any]) -> None:
        if self.keep is not None and not self.keep(tl):
            self.counts["foreign_allocations"] += 1
            return
        data = _line(tl).encode("utf-8")
        try:
            self._index.append((*timeline_key(tl), self._fh.tell(), len(data)))
            self._fh.write(data)
        except OSError as exc:  # disk full, say: a user error, not a decoder's (see _Guarded)
            raise SpoolError(f"cannot write timelines beside {self.path}: {exc}; free "
                               "space there and run `vimprof analyze` again") from exc
        c = self.counts
        c["timelines"] += 1
        c["incomplete"] += not tl["complete"]
        c["crosscheck_disagreements"] += tl.get("crosscheck", {}).get("disagreements", 0)

    def records(self) -> Iterator[dict[str, Any]]:
        """The kept timelines so far, in the order they were added (reads the spool)."""
        self._fh.flush()
        with open(self._spool, "rb") as fh:
            for _t, _i, off, n in sorted(self._index, key=lambda x: x[2]):
                fh.seek(off)
                yield json.loads(fh.read(n))

    def commit(self) -> None:
        """Write `path` (atomically) in timeline_key order and remove the spool."""
        self._fh.close()
        self._index.sort()
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp",
                                   dir=self.path.parent)
        try:
            with open(self._spool, "rb") as src, os.fdopen(fd, "wb") as out:
                for _t, _i, off, n in self._index:
                    src.seek(off)
                    out.write(src.read(n))
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise SpoolError(f"cannot write {self.path}: {exc}; free space there and run "
                             "`vimprof analyze` again") from exc
        finally:
            self.discard()

    def discard(self) -> None:
        if not self._fh.closed:
            with contextlib.suppress(OSError):  # unflushable on a full disk: dropped anyway
                self._fh.close()
        self._spool.unlink(missing_ok=True)


def analyze_run(
    run: RunDir,
    extra_captures: Iterable[CaptureSource] = (),
    *,
    hooks_offset_ns: int = 0,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
    follow: Any = None,
    ports: Ports | None = None,
) -> AnalysisResult:
    """Analyze `run`'s capture and rewrite its timelines.jsonl; see the module docstring.

    `extra_captures`: more capture files (or (file, clock offset ns) pairs) merged with
    run/capture.pcap, e.g. one recorded on the client host. hooks.jsonl, vim-events.jsonl
    and requests.jsonl of the run are merged and cross-checked when present. Streaming:
    timelines go to disk as instances finish (TimelineSpool), memory stays flat in capture
    size. `follow`: a follow.Follower (live mode, `vimprof analyze --follow`): the capture
    is read while it grows; see vimprof/analyzer/follow.py. `ports`: HTTP and RPC ports
    besides the defaults (default: those in the run's manifest).
    """
    ports = ports or Ports.of_run(run)
    if follow is not None:
        from vimprof.analyzer.follow import analyze_run_follow

        return analyze_run_follow(run, follow, extra_captures, hooks_offset_ns=hooks_offset_ns,
                                  tolerance_ms=tolerance_ms, ports=ports)
    cap = run.file(CAPTURE)
    extra = list(extra_captures)
    if not cap.is_file() and not extra and not _has_event_stream(run):
        raise VimprofError(
            f"no {CAPTURE} in {run.path}; record one with `vimprof capture` "
            "(or copy a tcpdump capture there) before `vimprof analyze`"
        )
    sources: list[CaptureSource] = ([cap] if cap.is_file() else []) + extra
    return analyze_sources(run, sources, hooks_offset_ns=hooks_offset_ns,
                           tolerance_ms=tolerance_ms, ports=ports)


def _has_event_stream(run: RunDir) -> bool:
    """Whether the run recorded Nomad's allocation events (pushers/nomad_events.py)."""
    p = run.file(VIM_EVENTS)
    if not p.is_file():
        return False
    with open(p, encoding="utf-8") as fh:
        return any('"via":"event-stream"' in line for line in fh)


def analyze_sources(
    run: RunDir,
    sources: list[CaptureSource],
    *,
    hooks_offset_ns: int = 0,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
    on_timeline: Callable[[dict[str, Any]], None] | None = None,
    enrich: bool = True,
    spool: TimelineSpool | None = None,
    ports: Ports | None = None,
) -> AnalysisResult:
    """analyze_run's work on given capture sources; `on_timeline(tl)` also sees each
    timeline kept (after enrichment) as it is finished. `enrich` False: the run's
    requests.jsonl, hooks.jsonl and vim-events.jsonl are not read (live mode: they are
    still being written) and timelines go to `spool` unfiltered, uncommitted."""
    requests, bad_req = read_jsonl(run.file(REQUESTS)) if enrich else ([], 0)
    hooks, bad_hooks = read_jsonl(run.file(HOOKS)) if enrich else ([], 0)
    vim_events, bad_ev = read_jsonl(run.file(VIM_EVENTS)) if enrich else ([], 0)
    job_runs = _job_runs(requests)
    out = run.file(TIMELINES)
    own = spool is None
    spool = spool or TimelineSpool(out, lambda t: _belongs(t, job_runs))

    wired: set[str] = set()  # instances the capture gave a timeline for

    def keep(tl: dict[str, Any]) -> None:
        before = spool.counts["timelines"]
        spool.add(tl)
        wired.add(tl["instance"])
        if on_timeline is not None and spool.counts["timelines"] > before:
            on_timeline(tl)

    try:
        if sources:
            _none, d, more = analyze(
                sources, job_runs, hooks, vim_events, requests, hooks_offset_ns, tolerance_ms,
                on_timeline=keep, ports=ports,
            )
        else:  # no capture: Nomad's own events and the client's instants only
            d, more = Decoded(), []
        if enrich:
            why = ("the capture is TLS-encrypted" if any(ENCRYPTED in w for w in d.warnings)
                   else "no capture was analyzed" if not sources
                   else "the capture has no messages about it")
            for tl in timelines_from_events(requests, vim_events, wired, why):
                keep(tl)
    except BaseException:
        if own:
            spool.discard()
        raise
    warnings = list(d.warnings)
    for name, bad in ((REQUESTS, bad_req), (HOOKS, bad_hooks), (VIM_EVENTS, bad_ev)):
        if bad:
            warnings.append(f"{name}: {bad} line(s) that are not JSON objects skipped")
    warnings.extend(more)
    if own:
        spool.commit()
    return _result(d, warnings, spool, out, sources)


def _result(d: Decoded, warnings: list[str], spool: TimelineSpool, out: Path,
            sources: list[CaptureSource]) -> AnalysisResult:
    if d.truncated and not any(w.startswith("capture truncated") for w in warnings):
        warnings.insert(0, f"capture truncated: {sources[0]} ends inside a record")
    if not spool.counts["timelines"] and not d.counts.get("connections"):
        warnings.append(
            "no VIM traffic in the capture: nothing to analyze (was the capture on the VIM "
            "core host's interface, with the VIM's ports in its filter?)"
        )
    counts = dict(d.counts)
    counts.update(spool.counts)
    return AnalysisResult(None, counts, warnings, d.truncated, out)
