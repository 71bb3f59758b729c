"""The analyzer's entry: composes the stages, captures -> timelines.jsonl.

sources/ (MergedReader) -> tcp.py (TcpReassembler) -> decoders/ (one per VIM connection,
chosen by decoders/ports.py; a failure contained per connection by _Guarded) ->
builders/ (MessageRouter) -> enrich.py (Enricher) -> sink.py (TimelineSpool), all
streaming: each stage hands its output to the next through a callback as it completes.
Live mode (follow.py) sits on top of this module; nothing here imports it.

`analyze_run(run, extra_captures=(), hooks_offset_ns=0, tolerance_ms=50)` reads
`run/capture.pcap` (plus extra captures, each optionally with a clock offset, merged by
time), joins job ids / server ids with `requests.jsonl` (its "run" values go into the
timelines), merges hooks.jsonl and vim-events.jsonl (enrich.py), cross-checks, and
rewrites `run/timelines.jsonl` from scratch (derived data). `analyze_capture(path | [(path,
offset_ns), ...], ...)` returns the timeline dicts (shape: vimprof/phases.py) of Nomad
allocations ("vim": "nomad", builders/nomad_phases.py) and Nova servers ("vim": "nova",
builders/nova_phases.py) alike. `decode_capture` gives the decoded messages (tests, debugging);
`stream_capture` hands them to callbacks as they complete (the analysis itself: memory stays
bounded by open connections and instances, not by capture size). Each instance's timeline is
emitted, enriched and written as soon as the instance is finished, its state dropped
(builders/nomad_phases / nova_phases "Streaming"; `analyze(..., on_timeline=f)`,
sink.TimelineSpool); live mode (`follow.analyze_run_follow(run, Follower(run))`):
analyzer/follow.py.

Errors: VimprofError when no capture can be read (missing, not pcap/pcapng, a classic pcap
with a link type vimprof cannot decode); with several captures an unreadable one is a
warning. A truncated capture gives partial timelines and a warning; TLS on a VIM port is
reported ("encrypted: cannot decode, use hooks or VIM events"), never parsed; bytes on the
VIM ports that do not decode are skipped and counted in the warnings; a capture without VIM
traffic says so. Nothing else is raised for bad capture content: a decoder failure on one
connection disables that connection and becomes a warning.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vimprof.analyzer.builders.nomad_events import timelines_from_events
from vimprof.analyzer.builders.nomad_phases import IDLE_NS, timeline_key
from vimprof.analyzer.builders.router import MessageRouter
from vimprof.analyzer.decoders.amqp import AmqpConnection, AmqpMessage, AmqpStats
from vimprof.analyzer.decoders.http import HttpConnection, HttpMessage
from vimprof.analyzer.decoders.nomad_rpc import (
    BODY_FIELDS,
    NomadRpcConnection,
    RpcMessage,
    RpcStats,
)
from vimprof.analyzer.decoders.ports import AMQP_PORTS, HTTP_PORTS, NOMAD_RPC_PORTS, Ports
from vimprof.analyzer.decoders.tls import ENCRYPTED
from vimprof.analyzer.enrich import (
    DEFAULT_TOLERANCE_MS,
    MAX_CROSSCHECK_WARNINGS,
    Enricher,
    belongs,
    job_runs_of,
    read_jsonl,
)
from vimprof.analyzer.sink import AnalysisResult, SpoolError, TimelineSpool
from vimprof.analyzer.sources.merge import CaptureSource, MergedReader
from vimprof.analyzer.tcp import Connection, StreamHandler, TcpReassembler
from vimprof.errors import VimprofError
from vimprof.rundir import CAPTURE, HOOKS, REQUESTS, TIMELINES, VIM_EVENTS, RunDir


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
    corrected time (sources.merge.MergedReader). Raises VimprofError if no file can be read.
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

    b = MessageRouter(emit, job_runs, idle_ns, ports.nomad_http)
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


def analyze_run(
    run: RunDir,
    extra_captures: Iterable[CaptureSource] = (),
    *,
    hooks_offset_ns: int = 0,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
    ports: Ports | None = None,
) -> AnalysisResult:
    """Analyze `run`'s capture and rewrite its timelines.jsonl; see the module docstring.

    `extra_captures`: more capture files (or (file, clock offset ns) pairs) merged with
    run/capture.pcap, e.g. one recorded on the client host. hooks.jsonl, vim-events.jsonl
    and requests.jsonl of the run are merged and cross-checked when present. Streaming:
    timelines go to disk as instances finish (TimelineSpool), memory stays flat in capture
    size. `ports`: HTTP and RPC ports besides the defaults (default: those in the run's
    manifest). Live mode (the capture read while it grows, `vimprof analyze --follow`) is
    follow.analyze_run_follow.
    """
    ports = ports or Ports.of_run(run)
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
    job_runs = job_runs_of(requests)
    out = run.file(TIMELINES)
    own = spool is None
    spool = spool or TimelineSpool(out, lambda t: belongs(t, job_runs))

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
