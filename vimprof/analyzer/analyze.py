"""The analyzer pipeline: capture.pcap -> TCP streams -> HTTP / Nomad RPC -> timelines.jsonl.

`analyze_run(run)` reads `run/capture.pcap`, joins job ids with `requests.jsonl` (its "run"
values go into the timelines), and rewrites `run/timelines.jsonl` from scratch (it is derived
data). `analyze_capture(path)` returns the timeline dicts of one capture (shape: vimprof/phases.py).

Errors: VimprofError when the capture is missing, is not a pcap/pcapng file, or uses a link
type vimprof cannot decode. A truncated capture gives partial timelines and a warning; bytes
on the VIM ports that do not decode are skipped and counted in the warnings. Nothing else is
raised for bad capture content: a decoder failure on one connection disables that connection
and becomes a warning.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vimprof.analyzer.http import HttpConnection, HttpMessage
from vimprof.analyzer.nomad_phases import build_timelines
from vimprof.analyzer.nomad_rpc import NomadRpcConnection, RpcMessage, RpcStats
from vimprof.analyzer.pcap import PcapReader
from vimprof.analyzer.tcp import Connection, StreamHandler, TcpReassembler
from vimprof.errors import VimprofError
from vimprof.rundir import CAPTURE, REQUESTS, TIMELINES, RunDir

NOMAD_HTTP_PORTS = (4646,)
NOMAD_RPC_PORTS = (4647,)


@dataclass
class AnalysisResult:
    """What one analysis produced.

    counts: packets (TCP segments read), records (capture records), connections (on the VIM
    ports), http_messages, rpc_messages, timelines, incomplete (timelines with
    complete=false), tcp_gaps, snapped (segments cut by the snaplen); warnings: lines for the
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
        if c.get("foreign_allocations"):
            line += f"; {c['foreign_allocations']} allocation(s) of other jobs ignored"
        return line + (" (capture truncated)" if self.truncated else "")


@dataclass
class Decoded:
    """Messages decoded from one capture, in the order they completed."""

    http: list[HttpMessage] = field(default_factory=list)
    rpc: list[RpcMessage] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False


class _Guarded:
    """Wraps a decoder so that a failure on one connection cannot stop the analysis."""

    def __init__(self, inner: StreamHandler, conn: Connection, errors: list[str]):
        self.inner = inner
        self.conn = conn
        self.errors = errors
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


def decode_capture(
    path: str | Path,
    http_ports: Iterable[int] = NOMAD_HTTP_PORTS,
    rpc_ports: Iterable[int] = NOMAD_RPC_PORTS,
) -> Decoded:
    """HTTP messages (on `http_ports`) and Nomad RPC messages (on `rpc_ports`) of a capture.

    Raises VimprofError if the file is missing or not a capture.
    """
    path = Path(path)
    http_ports = frozenset(http_ports)
    rpc_ports = frozenset(rpc_ports)
    out = Decoded()
    stats = RpcStats()
    errors: list[str] = []
    http_conns: list[HttpConnection] = []

    def factory(conn: Connection) -> StreamHandler | None:
        port = conn.server[1]
        if port in http_ports:
            h = HttpConnection(conn, out.http.append)
            http_conns.append(h)
            return _Guarded(h, conn, errors)
        if port in rpc_ports:
            return _Guarded(NomadRpcConnection(conn, out.rpc.append, stats), conn, errors)
        return None

    ports = http_ports | rpc_ports
    tcp = TcpReassembler(factory, server_ports=ports)
    last_t = 0
    with PcapReader(path) as reader:
        for pkt in reader:
            if pkt.sport in ports or pkt.dport in ports:
                tcp.add(pkt)
            last_t = pkt.t_ns
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
        connections=len(tcp.all_connections),
        tcp_gaps=tcp.gaps,
        retransmitted_bytes=tcp.retransmitted_bytes,
        http_messages=len(out.http),
        rpc_messages=len(out.rpc),
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
    http_garbage = sum(h.garbage_bytes for h in http_conns)
    http_dropped = sum(h.dropped for h in http_conns)
    if http_garbage or http_dropped:
        out.warnings.append(
            f"HTTP: {http_garbage} bytes that are not HTTP skipped, "
            f"{http_dropped} messages cut short dropped"
        )
    if stats.garbage_bytes or stats.lost_messages:
        out.warnings.append(
            f"Nomad RPC: {stats.garbage_bytes} bytes that do not decode skipped, "
            f"{stats.lost_messages} messages lost"
        )
    for why, n in sorted(stats.skipped_connections.items()):
        if why.startswith("streaming"):
            continue  # normal traffic (logs, exec), not a problem
        out.warnings.append(f"Nomad RPC: {n} connection(s)/stream(s) skipped: {why}")
    seen: set[str] = set()
    for w in stats.warnings + errors:
        if w not in seen:
            seen.add(w)
            out.warnings.append(w)
    if not tcp.all_connections:
        out.warnings.append(
            "no TCP traffic on ports {} in the capture".format(
                ", ".join(str(p) for p in sorted(ports))
            )
        )
    return out


def analyze_capture(
    path: str | Path, job_runs: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Timeline dicts (vimprof/phases.py shape) of one capture; VimprofError as decode_capture."""
    d = decode_capture(path)
    return build_timelines(d.http, d.rpc, job_runs)


def _job_runs(run: RunDir) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for rec in run.read(REQUESTS):
        job = rec.get("job_id")
        if isinstance(job, str) and job:
            runs[job] = rec.get("run")
    return runs


def _belongs(timeline: dict[str, Any], job_runs: dict[str, Any]) -> bool:
    """Whether an allocation is one of this campaign's instances.

    A capture also shows allocations of other jobs in passing (an earlier campaign's last
    allocation reporting late, other users' jobs): with requests.jsonl only its jobs count;
    without it, an allocation counts once its job is known from the capture.
    """
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


def analyze_run(run: RunDir) -> AnalysisResult:
    """Analyze `run`'s capture and rewrite its timelines.jsonl; see the module docstring."""
    cap = run.file(CAPTURE)
    if not cap.is_file():
        raise VimprofError(
            f"no {CAPTURE} in {run.path}; record one with `vimprof capture` "
            "(or copy a tcpdump capture there) before `vimprof analyze`"
        )
    d = decode_capture(cap)
    job_runs = _job_runs(run)
    everything = build_timelines(d.http, d.rpc, job_runs)
    timelines = [t for t in everything if _belongs(t, job_runs)]
    out = run.file(TIMELINES)
    write_timelines(out, timelines)
    warnings = list(d.warnings)
    if d.truncated and not any(w.startswith("capture truncated") for w in warnings):
        warnings.insert(0, f"capture truncated: {cap} ends inside a record")
    counts = dict(d.counts)
    counts["timelines"] = len(timelines)
    counts["foreign_allocations"] = len(everything) - len(timelines)
    counts["incomplete"] = sum(1 for t in timelines if not t["complete"])
    return AnalysisResult(timelines, counts, warnings, d.truncated, out)
