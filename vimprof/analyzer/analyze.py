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
bounded by open connections and instances, not by capture size).

Errors: VimprofError when no capture can be read (missing, not pcap/pcapng, a classic pcap
with a link type vimprof cannot decode); with several captures an unreadable one is a
warning. A truncated capture gives partial timelines and a warning; TLS on a VIM port is
reported ("encrypted: cannot decode, use hooks or VIM events"), never parsed; bytes on the
VIM ports that do not decode are skipped and counted in the warnings; a capture without VIM
traffic says so. Nothing else is raised for bad capture content: a decoder failure on one
connection disables that connection and becomes a warning.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vimprof.analyzer.amqp import AmqpConnection, AmqpMessage, AmqpStats
from vimprof.analyzer.enrich import (
    DEFAULT_TOLERANCE_MS,
    crosscheck,
    merge_hooks,
    merge_vim_events,
    read_jsonl,
)
from vimprof.analyzer.http import HttpConnection, HttpMessage
from vimprof.analyzer.nomad_phases import NomadTimelines
from vimprof.analyzer.nomad_rpc import BODY_FIELDS, NomadRpcConnection, RpcMessage, RpcStats
from vimprof.analyzer.nova_phases import AMQP_PORTS, NovaTimelines
from vimprof.analyzer.nova_phases import HTTP_PORTS as NOVA_HTTP_PORTS
from vimprof.analyzer.pcap import ACK, CaptureSource, MergedReader
from vimprof.analyzer.tcp import Connection, StreamHandler, TcpReassembler
from vimprof.analyzer.tls import ENCRYPTED
from vimprof.errors import VimprofError
from vimprof.rundir import CAPTURE, HOOKS, REQUESTS, TIMELINES, VIM_EVENTS, RunDir

NOMAD_HTTP_PORTS = (4646,)
NOMAD_RPC_PORTS = (4647,)
HTTP_PORTS = NOMAD_HTTP_PORTS + NOVA_HTTP_PORTS  # Nomad API, nova-api, keystone, glance, ...


@dataclass
class AnalysisResult:
    """What one analysis produced.

    counts: packets (TCP segments read), records (capture records), connections (on the VIM
    ports), http_messages, rpc_messages, amqp_messages, timelines, incomplete (timelines with
    complete=false), tcp_gaps, snapped (segments cut by the snaplen), encrypted_connections,
    crosscheck_disagreements (failed checks over all timelines); warnings: lines for the
    user; truncated: the capture ends inside a record; timelines: the records written.
    """

    timelines: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False
    path: Path | None = None

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
            line += f"; {c['foreign_allocations']} allocation(s) of other jobs ignored"
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
                self.inner.data(direction, t_ns, data)
            except Exception as e:  # noqa: BLE001 - contain decoder bugs per connection
                self._fail(e)

    def gap(self, direction: int, t_ns: int, missing: int) -> None:
        if not self.dead:
            try:
                self.inner.gap(direction, t_ns, missing)
            except Exception as e:  # noqa: BLE001
                self._fail(e)

    def close(self, t_ns: int, reason: str) -> None:
        if not self.dead:
            try:
                self.inner.close(t_ns, reason)
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
        self.tls: list[tuple[str, int, str, int]] = []

    def closed(self, handler: StreamHandler) -> None:
        if isinstance(handler, HttpConnection):
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
    totals = _Totals()
    n = {"http": 0, "rpc": 0, "amqp": 0}

    def count_http(m: HttpMessage) -> None:
        n["http"] += 1
        on_http(m)

    def count_rpc(m: RpcMessage) -> None:
        n["rpc"] += 1
        on_rpc(m)

    def factory(conn: Connection) -> StreamHandler | None:
        port = conn.server[1]
        if port in http_ports:
            return _Guarded(HttpConnection(conn, count_http), conn, errors, totals.closed)
        if port in rpc_ports:
            return _Guarded(
                NomadRpcConnection(conn, count_rpc, stats, rpc_body_fields), conn, errors
            )
        if port in amqp_ports:
            return _Guarded(AmqpConnection(conn, on_amqp, astats), conn, errors)
        return None

    ports = http_ports | rpc_ports | amqp_ports
    tcp = TcpReassembler(factory, server_ports=ports, keep_connections=False)
    last_t = 0
    add = tcp.add
    add_ack = tcp.add_ack
    n_pkts = 0
    with MergedReader(_sources(path)) as reader:
        for pkt in reader:
            if pkt.sport in ports or pkt.dport in ports:
                if pkt.flags == ACK and not pkt.payload:
                    add_ack(pkt)
                else:
                    add(pkt)
            last_t = pkt.t_ns
            n_pkts += 1
            if not n_pkts & 0x3FFF:
                tcp.expire(last_t)
        tcp.finish(last_t)
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
        http_messages=n["http"],
        rpc_messages=n["rpc"],
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

    Requests are held only until their response arrives; those never answered are handed
    over at the end (their reply events are then missing).
    """

    def __init__(self) -> None:
        self.nomad = NomadTimelines()
        self.nova = NovaTimelines()
        self.pending_http: dict[int, HttpMessage] = {}
        self.pending_rpc: dict[int, RpcMessage] = {}

    def http(self, m: HttpMessage) -> None:
        if m.kind == "request":
            self.pending_http[id(m)] = m
            return
        req = m.request
        if req is None:
            return
        self.pending_http.pop(id(req), None)
        if req.conn[3] in NOMAD_HTTP_PORTS:
            self.nomad.add_http(m)
        else:
            self.nova.add_http(req, m)

    def rpc(self, m: RpcMessage) -> None:
        if m.direction == "request":
            self.pending_rpc[id(m)] = m
        elif m.request is not None:
            self.pending_rpc.pop(id(m.request), None)
        self.nomad.add_rpc(m)

    def amqp(self, m: AmqpMessage) -> None:
        self.nova.add_amqp(m)

    def timelines(
        self, job_runs: dict[str, Any], server_runs: dict[str, Any]
    ) -> list[dict[str, Any]]:
        for req in self.pending_http.values():
            if req.conn[3] in NOMAD_HTTP_PORTS:
                self.nomad.add_http_request_only(req)
            else:
                self.nova.add_http(req, None)
        for r in self.pending_rpc.values():
            self.nomad.add_rpc_request_only(r)
        self.pending_http.clear()
        self.pending_rpc.clear()
        return self.nomad.timelines(job_runs) + self.nova.timelines(server_runs)


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
    "crosscheck" dict. VimprofError as decode_capture.
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
) -> tuple[list[dict[str, Any]], Decoded, list[str]]:
    """(timelines, Decoded counts/warnings, merge/cross-check warnings), streaming: the
    decoded messages are turned into events as they complete and never all held."""
    b = _Builders()
    d = stream_capture(path, b.http, b.rpc, b.amqp, rpc_body_fields=BODY_FIELDS)
    runs = dict(job_runs or {})
    timelines = b.timelines(runs, runs)
    warnings: list[str] = []
    if b.nova.undecodable:
        warnings.append(f"AMQP: {b.nova.undecodable} message bodies are not oslo JSON; skipped")
    if hooks:
        warnings.extend(merge_hooks(timelines, hooks, hooks_offset_ns))
    if vim_events:
        warnings.extend(merge_vim_events(timelines, vim_events))
    if hooks or vim_events or requests:
        warnings.extend(crosscheck(timelines, requests or [], tolerance_ms))
    return timelines, d, warnings


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


def write_timelines(path: Path, timelines: list[dict[str, Any]]) -> None:
    """Write timelines.jsonl from scratch (atomically: a temp file then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for rec in timelines:
            fh.write(json.dumps(rec, separators=(",", ":"), sort_keys=True) + "\n")
    os.replace(tmp, path)


def analyze_run(
    run: RunDir,
    extra_captures: Iterable[CaptureSource] = (),
    *,
    hooks_offset_ns: int = 0,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
) -> AnalysisResult:
    """Analyze `run`'s capture and rewrite its timelines.jsonl; see the module docstring.

    `extra_captures`: more capture files (or (file, clock offset ns) pairs) merged with
    run/capture.pcap, e.g. one recorded on the client host. hooks.jsonl, vim-events.jsonl
    and requests.jsonl of the run are merged and cross-checked when present.
    """
    cap = run.file(CAPTURE)
    extra = list(extra_captures)
    if not cap.is_file() and not extra:
        raise VimprofError(
            f"no {CAPTURE} in {run.path}; record one with `vimprof capture` "
            "(or copy a tcpdump capture there) before `vimprof analyze`"
        )
    sources: list[CaptureSource] = ([cap] if cap.is_file() else []) + extra
    requests, bad_req = read_jsonl(run.file(REQUESTS))
    hooks, bad_hooks = read_jsonl(run.file(HOOKS))
    vim_events, bad_ev = read_jsonl(run.file(VIM_EVENTS))
    job_runs = _job_runs(requests)
    everything, d, more = analyze(
        sources, job_runs, hooks, vim_events, requests, hooks_offset_ns, tolerance_ms
    )
    warnings = list(d.warnings)
    for name, bad in ((REQUESTS, bad_req), (HOOKS, bad_hooks), (VIM_EVENTS, bad_ev)):
        if bad:
            warnings.append(f"{name}: {bad} line(s) that are not JSON objects skipped")
    warnings.extend(more)
    timelines = [t for t in everything if _belongs(t, job_runs)]
    out = run.file(TIMELINES)
    write_timelines(out, timelines)
    if d.truncated and not any(w.startswith("capture truncated") for w in warnings):
        warnings.insert(0, f"capture truncated: {cap} ends inside a record")
    if not timelines and not d.counts.get("connections"):
        warnings.append(
            "no VIM traffic in the capture: nothing to analyze (was the capture on the VIM "
            "core host's interface, with the VIM's ports in its filter?)"
        )
    counts = dict(d.counts)
    counts["timelines"] = len(timelines)
    counts["foreign_allocations"] = len(everything) - len(timelines)
    counts["incomplete"] = sum(1 for t in timelines if not t["complete"])
    counts["crosscheck_disagreements"] = sum(
        t.get("crosscheck", {}).get("disagreements", 0) for t in timelines
    )
    return AnalysisResult(timelines, counts, warnings, d.truncated, out)
