"""Nomad allocation timelines from captured HTTP (4646) and RPC (4647) messages.

Events (source "capture"; `host` = IP address of the message's sender; `t_ns` ns since epoch):

| name                           | from                                            | time        |
|--------------------------------|-------------------------------------------------|-------------|
| Job.Register request           | HTTP PUT/POST /v1/jobs, /v1/job/<id>; RPC       | t_first_ns  |
| Job.Register response          | its reply (attrs eval_id, status or error)      | t_last_ns   |
| Node.GetClientAllocs response  | alloc first listed, or AllocModifyIndex changed | t_last_ns   |
| Alloc.GetAllocs request        | client pulls the alloc (AllocIDs)               | t_first_ns  |
| Alloc.GetAllocs response       | alloc body (attrs client/desired status, eval)  | t_last_ns   |
| Node.UpdateAlloc request       | first report of each ClientStatus of the alloc  | t_last_ns   |
| Node.UpdateAlloc response      | the server's acknowledgement of that report     | t_last_ns   |
| Job.Deregister request         | HTTP DELETE /v1/job/<id>; RPC Job.Deregister    | t_first_ns  |
| Job.Deregister response        | its reply                                       | t_last_ns   |
| Task event <Type>              | TaskStates[task].Events in Node.UpdateAlloc     | Event.Time  |
|                                | (Received, Task Setup, Started, Killed, ...)    | client clock|

Phases (vimprof/phases.py NOMAD, shared/design/nomad-internals.md section 2):
scheduling = Job.Register request -> alloc first reaches the client (earliest of
Node.GetClientAllocs response listing it and Alloc.GetAllocs request naming it);
instantiation = Alloc.GetAllocs request -> Node.UpdateAlloc request with ClientStatus
"running"; total = Job.Register request -> that Node.UpdateAlloc request.
Finer phases (PhaseModel.detail): api = Job.Register request -> its response;
client_pickup = alloc reaches the client -> Alloc.GetAllocs response; task_start =
Alloc.GetAllocs response -> task event Started (the driver's StartTask returned);
notification = task Started -> Node.UpdateAlloc request "running" as captured at the server
(the lazy notification, nomad-internals.md section 3); commit = that Node.UpdateAlloc request
-> the server's reply (its update batch, 50 ms in stock Nomad (nomad/node_endpoint.go
batchUpdateInterval), and the Raft apply: the instant an API client can see "running" comes
after it); stop = Job.Deregister request ->
Node.UpdateAlloc request with a terminal ClientStatus (complete, failed, lost).
A phase whose boundary is missing is left out, the record gets complete=false and an issue.

Streaming (flat memory): an allocation's timeline is emitted (NomadTimelines `emit` callback)
and its state dropped once it is finished: `finish_ns` (capture time, 2 s) after both its
terminal Node.UpdateAlloc request and a purge of its job (Job.Deregister with purge) were
seen, `grace_ns` (5 s) after the terminal status alone, `purge_grace_ns` (30 s) after a
purge without terminal status; an allocation that never completes is emitted after `idle_ns` (300
s) without a message about it, and every remaining one at the end. Messages about an emitted
allocation arriving later are ignored (counted in `late`); jobs and unanswered requests
are forgotten after `idle_ns` too, emitted ids after 3 `idle_ns` (at least 10 min).
Capture time is the latest message time seen.

Event attrs carry only ids, method names, statuses and paths (query strings dropped), never
bodies or headers, so no credential reaches a timeline.

Analyzer stage 4, builders (vimprof/analyzer/__init__.py): HttpMessage / RpcMessage in
(through builders/router.py), Nomad timeline dicts out, to the pipeline's enrichment.
"""

from __future__ import annotations

import json
import re
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vimprof.analyzer.decoders.http import HttpMessage
from vimprof.analyzer.decoders.nomad_rpc import RpcMessage
from vimprof.phases import NOMAD

SOURCE = "capture"

EV_REGISTER = "Job.Register request"
EV_REGISTER_REPLY = "Job.Register response"
EV_CLIENT_ALLOCS = "Node.GetClientAllocs response"
EV_PULL = "Alloc.GetAllocs request"
EV_PULL_REPLY = "Alloc.GetAllocs response"
EV_UPDATE = "Node.UpdateAlloc request"
EV_UPDATE_REPLY = "Node.UpdateAlloc response"
EV_DEREGISTER = "Job.Deregister request"
EV_DEREGISTER_REPLY = "Job.Deregister response"
EV_TASK_PREFIX = "Task event "  # + TaskEvent.Type, e.g. "Task event Started"
EV_STARTED = EV_TASK_PREFIX + "Started"
TERMINAL = frozenset({"complete", "failed", "lost"})
FINISH_NS = 2_000_000_000  # after terminal status and purge: replies, the last batch
GRACE_NS = 5_000_000_000  # after the terminal status: its reply, a purge, late task events
PURGE_GRACE_NS = 30_000_000_000  # after a purge without terminal status (guest still dying)
IDLE_NS = 300_000_000_000  # an allocation / job / emitted id without message this long goes
SWEEP_NS = 1_000_000_000
# the RPC methods add_rpc reads (any other message only advances the clock)
_RPC_METHODS = frozenset(
    ("Alloc.GetAllocs", "Node.UpdateAlloc", "Node.GetClientAllocs", "Job.Register",
     "Job.Deregister")
)


def gone_ns(idle_ns: int) -> int:
    """How long an emitted instance's id is remembered: 3 idle_ns, at least 10 min."""
    return max(3 * idle_ns, 600_000_000_000)
  # capture time between two looks for allocations to emit

_REGISTER_PATH = re.compile(r"^/v1/(?:jobs|job/([^/?#]+))/?$")
_JOB_PATH = re.compile(r"^/v1/job/([^/?#]+)/?$")
_ID_FALLBACK = re.compile(rb'"ID"\s*:\s*"([^"\\]{1,256})"')
JSON_LIMIT = 8 * 1024 * 1024  # decompressed bytes looked at in an HTTP body


@dataclass(slots=True)
class Event:
    """One event of a timeline (ARCHITECTURE.md "Units and names")."""

    t_ns: int
    host: str
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "t_ns": self.t_ns,
            "source": SOURCE,
            "host": self.host,
            "name": self.name,
            "attrs": self.attrs,
        }


@dataclass
class _JobEvent:
    job: str
    event: Event
    eval_id: str | None = None
    via: str = "http"
    reply: Event | None = None


@dataclass
class _Alloc:
    id: str
    job: str | None = None
    eval_id: str | None = None
    events: list[Event] = field(default_factory=list)
    reach: Event | None = None  # first time the client knows the alloc
    pull: Event | None = None
    running: Event | None = None
    running_reply: Event | None = None  # the server's reply to the running Node.UpdateAlloc
    statuses: set[str] = field(default_factory=set)
    pull_reply: Event | None = None
    started: Event | None = None  # first task "Started" event (client clock)
    terminal: Event | None = None  # first Node.UpdateAlloc request with a terminal status
    task_seen: set[tuple[str, str, int]] = field(default_factory=set)
    modify_index: Any = None
    last_t: int = 0  # capture time of the last message about it
    purged: bool = False  # a purge of its job was seen


def _path(raw: str) -> str:
    return raw.split("?", 1)[0].split("#", 1)[0]


def _query_flag(raw: str, name: str) -> bool:
    _, _, q = raw.partition("?")
    for part in q.split("&"):
        k, _, v = part.partition("=")
        if k == name:
            return v.lower() in ("", "true", "1")
    return False


def _http_body(msg: HttpMessage) -> bytes:
    body = msg.body
    enc = msg.headers.get("content-encoding", "").lower()
    if enc in ("gzip", "deflate") and body:
        try:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS if enc == "gzip" else zlib.MAX_WBITS)
            body = d.decompress(body, JSON_LIMIT)
        except zlib.error:
            return b""
    return body


def _json(msg: HttpMessage) -> Any:
    body = _http_body(msg)
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _get_ci(d: Any, key: str) -> Any:
    """d[key] with the key matched case-insensitively (python-nomad and curl users differ)."""
    if not isinstance(d, dict):
        return None
    if key in d:
        return d[key]
    low = key.lower()
    for k, v in d.items():
        if isinstance(k, str) and k.lower() == low:
            return v
    return None


def _register_job_id(msg: HttpMessage, path_id: str | None) -> str | None:
    doc = _json(msg)
    if isinstance(doc, dict):
        job = _get_ci(doc, "Job")
        for src in (job, doc):
            jid = _get_ci(src, "ID")
            if isinstance(jid, str) and jid:
                return jid
    elif msg.body:
        m = _ID_FALLBACK.search(_http_body(msg))
        if m:
            return m.group(1).decode("utf-8", "replace")
    return path_id


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


class NomadTimelines:
    """Collects Nomad events from messages and builds one timeline per allocation.

    `emit(timeline)` is called with each allocation's timeline dict as soon as it is
    complete (module docstring, "Streaming"); without `emit` they are collected and
    `timelines()` returns them all. `job_runs`: job id -> run (requests.jsonl). `sweep`:
    False keeps everything until `timelines()` (messages not in capture-time order).
    """

    def __init__(
        self,
        emit: Callable[[dict[str, Any]], None] | None = None,
        job_runs: dict[str, Any] | None = None,
        *,
        sweep: bool = True,
        finish_ns: int = FINISH_NS,
        grace_ns: int = GRACE_NS,
        purge_grace_ns: int = PURGE_GRACE_NS,
        idle_ns: int = IDLE_NS,
    ) -> None:
        # job id -> its registrations / deregistrations, in capture order
        self.registers: dict[str, list[_JobEvent]] = {}
        self.deregisters: dict[str, list[_JobEvent]] = {}
        self.allocs: OrderedDict[str, _Alloc] = OrderedDict()  # least recently touched first
        self.emit = emit
        self.job_runs = dict(job_runs or {})
        self.sweeping = sweep
        self.finish_ns, self.grace_ns = finish_ns, grace_ns
        self.purge_grace_ns, self.idle_ns = purge_grace_ns, idle_ns
        self.done: dict[str, int] = {}  # alloc id -> capture time at which to emit it
        self.gone: dict[str, int] = {}  # emitted alloc id -> when (oldest first)
        self.job_t: OrderedDict[str, int] = OrderedDict()  # job -> last (de)registration
        self.now = 0  # capture time: the latest message time seen (ns)
        self._swept = 0
        self.emitted = 0
        self.late = 0  # messages about an allocation already emitted, ignored
        self._out: list[dict[str, Any]] = []

    def _alloc(self, alloc_id: str, t: int = 0) -> _Alloc | None:
        """The live allocation `alloc_id` (created if new), None if already emitted."""
        a = self.allocs.get(alloc_id)
        if a is None:
            if alloc_id in self.gone:
                self.late += 1
                return None
            a = self.allocs[alloc_id] = _Alloc(alloc_id)
        else:
            self.allocs.move_to_end(alloc_id)
        if t > a.last_t:
            a.last_t = t
        return a

    # -- streaming -------------------------------------------------------------------------

    def live(self) -> dict[str, int]:
        """Sizes of the state held (allocs, jobs, done, gone): bounded, not growing with
        the capture."""
        return {"allocs": len(self.allocs), "jobs": len(self.job_t), "done": len(self.done),
                "gone": len(self.gone)}

    def _clock(self, t: int) -> None:
        if t > self.now:
            self.now = t
        if self.sweeping and self.now - self._swept >= SWEEP_NS:
            self.tick(self.now)

    def tick(self, now_ns: int) -> None:
        """Emit the allocations due at capture time `now_ns` and forget stale state."""
        if now_ns > self.now:
            self.now = now_ns
        now = self.now
        self._swept = now
        for aid in [k for k, due in self.done.items() if due <= now]:
            self._emit(aid)
        idle = now - self.idle_ns
        while self.allocs:
            a = next(iter(self.allocs.values()))
            if a.last_t >= idle:
                break
            self._emit(a.id)
        if self.job_t and next(iter(self.job_t.values())) < idle:
            busy = {a.job for a in self.allocs.values()}
            while self.job_t:
                job, t = next(iter(self.job_t.items()))
                if t >= idle:
                    break
                if job in busy:
                    self.job_t.move_to_end(job)
                    self.job_t[job] = now
                    continue
                del self.job_t[job]
                self.registers.pop(job, None)
                self.deregisters.pop(job, None)
        forget = now - gone_ns(self.idle_ns)  # emitted ids: kept longer, they are small
        while self.gone:
            aid, t = next(iter(self.gone.items()))
            if t >= forget:
                break
            del self.gone[aid]

    def _emit(self, aid: str) -> None:
        a = self.allocs.pop(aid)
        self.done.pop(aid, None)
        self.gone[aid] = self.now
        tl = self._timeline(a)
        self.emitted += 1
        if self.emit is not None:
            self.emit(tl)
        else:
            self._out.append(tl)

    def _job_seen(self, job: str, t: int) -> None:
        self.job_t[job] = max(t, self.job_t.pop(job, 0))

    # -- HTTP ------------------------------------------------------------------------------

    def add_http(self, msg: HttpMessage) -> None:
        """A response with its request (requests are handled through their response)."""
        if msg.kind == "response" and msg.request is not None:
            self._http_exchange(msg.request, msg)

    def add_http_request_only(self, req: HttpMessage) -> None:
        """A request whose response is not in the capture."""
        self._http_exchange(req, None)

    def _http_exchange(self, req: HttpMessage, resp: HttpMessage | None) -> None:
        self._clock(resp.t_last_ns if resp is not None else req.t_last_ns)
        path = _path(req.path)
        method = req.method
        if method in ("PUT", "POST"):
            m = _REGISTER_PATH.match(path)
            if not m:
                return
            job = _register_job_id(req, m.group(1))
            if job is None:
                return
            ev = Event(
                req.t_first_ns,
                req.conn[0],
                EV_REGISTER,
                {"job": job, "via": "http", "method": method, "path": path},
            )
            je = _JobEvent(job, ev, via="http")
            if resp is not None:
                doc = _json(resp)
                je.eval_id = _str(_get_ci(doc, "EvalID"))
                attrs: dict[str, Any] = {"job": job, "via": "http", "status": resp.status}
                if je.eval_id:
                    attrs["eval_id"] = je.eval_id
                je.reply = Event(resp.t_last_ns, req.conn[2], EV_REGISTER_REPLY, attrs)
            self.registers.setdefault(job, []).append(je)
            self._job_seen(job, req.t_first_ns)
        elif method == "DELETE":
            m = _JOB_PATH.match(path)
            if not m:
                return
            job = m.group(1)
            ev = Event(
                req.t_first_ns,
                req.conn[0],
                EV_DEREGISTER,
                {
                    "job": job,
                    "via": "http",
                    "method": method,
                    "path": path,
                    "purge": _query_flag(req.path, "purge"),
                },
            )
            je = _JobEvent(job, ev, via="http")
            if resp is not None:
                je.eval_id = _str(_get_ci(_json(resp), "EvalID"))
                attrs = {"job": job, "via": "http", "status": resp.status}
                if je.eval_id:
                    attrs["eval_id"] = je.eval_id
                je.reply = Event(resp.t_last_ns, req.conn[2], EV_DEREGISTER_REPLY, attrs)
            self._deregistered(je, bool(je.event.attrs["purge"]))

    # -- RPC -------------------------------------------------------------------------------

    def _deregistered(self, je: _JobEvent, purge: bool) -> None:
        self.deregisters.setdefault(je.job, []).append(je)
        self._job_seen(je.job, je.event.t_ns)
        if purge:
            for a in self.allocs.values():
                if a.job == je.job:
                    a.purged = True
                    self._due(a, self.finish_ns if a.terminal else self.purge_grace_ns)

    def _due(self, a: _Alloc, after_ns: int) -> None:
        due = self.now + after_ns
        self.done[a.id] = min(self.done.get(a.id, due), due)

    def add_rpc(self, msg: RpcMessage) -> None:
        self._clock(msg.t_last_ns)
        method = msg.method
        if method not in _RPC_METHODS:
            return  # e.g. Node.UpdateStatus heartbeats, ~40% of the messages: only the clock
        body = msg.body if isinstance(msg.body, dict) else {}
        if msg.direction == "request":
            if method == "Alloc.GetAllocs":
                ids = body.get("AllocIDs")
                for aid in ids if isinstance(ids, list) else []:
                    if not isinstance(aid, str):
                        continue
                    a = self._alloc(aid, msg.t_last_ns)
                    if a is None:
                        continue
                    ev = Event(msg.t_first_ns, msg.sender, EV_PULL, {"alloc": aid})
                    a.events.append(ev)
                    if a.pull is None:
                        a.pull = ev
                    if a.reach is None or ev.t_ns < a.reach.t_ns:
                        a.reach = ev
            elif method == "Node.UpdateAlloc":
                allocs = body.get("Alloc")
                for item in allocs if isinstance(allocs, list) else []:
                    self._update_alloc(msg, item)
            return  # Job.Register / Job.Deregister: with their response (or unanswered)
        # responses
        req = msg.request
        if method == "Node.GetClientAllocs":
            allocs = body.get("Allocs")
            if isinstance(allocs, dict):
                for aid, index in allocs.items():
                    if not isinstance(aid, str):
                        continue
                    if aid in self.gone:
                        continue  # still listed after its timeline went: not news
                    a = self._alloc(aid, msg.t_last_ns)
                    if a is None or (a.modify_index == index and a.events):
                        continue
                    a.modify_index = index
                    ev = Event(
                        msg.t_last_ns,
                        msg.sender,
                        EV_CLIENT_ALLOCS,
                        {"alloc": aid, "alloc_modify_index": index},
                    )
                    a.events.append(ev)
                    if a.reach is None or ev.t_ns < a.reach.t_ns:
                        a.reach = ev
        elif method == "Alloc.GetAllocs":
            allocs = body.get("Allocs")
            for item in allocs if isinstance(allocs, list) else []:
                if not isinstance(item, dict) or not _str(item.get("ID")):
                    continue
                a = self._alloc(item["ID"], msg.t_last_ns)
                if a is None:
                    continue
                a.job = _str(item.get("JobID")) or a.job
                a.eval_id = _str(item.get("EvalID")) or a.eval_id
                attrs = {"alloc": a.id}
                for key, name in (
                    ("JobID", "job"),
                    ("EvalID", "eval_id"),
                    ("ClientStatus", "client_status"),
                    ("DesiredStatus", "desired_status"),
                ):
                    if _str(item.get(key)):
                        attrs[name] = item[key]
                ev = Event(msg.t_last_ns, msg.sender, EV_PULL_REPLY, attrs)
                a.events.append(ev)
                if a.pull_reply is None:
                    a.pull_reply = ev
        elif method == "Node.UpdateAlloc" and req is not None:
            rbody = req.body if isinstance(req.body, dict) else {}
            for item in rbody.get("Alloc") or []:
                if not isinstance(item, dict) or not _str(item.get("ID")):
                    continue
                a = self.allocs.get(item["ID"])
                status = item.get("ClientStatus")
                if a is None or not any(
                    e.name == EV_UPDATE
                    and e.t_ns == req.t_last_ns
                    and e.attrs.get("client_status") == status
                    for e in a.events
                ):
                    continue
                attrs = {"alloc": a.id, "client_status": status}
                if msg.error:
                    attrs["error"] = msg.error[:200]
                ev = Event(msg.t_last_ns, msg.sender, EV_UPDATE_REPLY, attrs)
                a.events.append(ev)
                if (status == "running" and a.running is not None and a.running_reply is None
                        and a.running.t_ns == req.t_last_ns and not msg.error):
                    a.running_reply = ev
        elif method in ("Job.Register", "Job.Deregister") and req is not None:
            self._rpc_job(req, msg)

    def add_rpc_request_only(self, req: RpcMessage) -> None:
        """An RPC request whose response is not in the capture."""
        if req.method in ("Job.Register", "Job.Deregister"):
            self._rpc_job(req, None)

    def _rpc_job(self, req: RpcMessage, resp: RpcMessage | None) -> None:
        body = req.body if isinstance(req.body, dict) else {}
        if req.method == "Job.Register":
            job = _str(_get_ci(body.get("Job"), "ID"))
            name, reply_name, target = EV_REGISTER, EV_REGISTER_REPLY, self.registers
        else:
            job = _str(body.get("JobID"))
            name, reply_name, target = EV_DEREGISTER, EV_DEREGISTER_REPLY, self.deregisters
        if job is None:
            return
        attrs: dict[str, Any] = {"job": job, "via": "rpc"}
        if req.method == "Job.Deregister":
            attrs["purge"] = bool(body.get("Purge"))
        self._clock(resp.t_last_ns if resp is not None else req.t_last_ns)
        je = _JobEvent(job, Event(req.t_first_ns, req.sender, name, attrs), via="rpc")
        if resp is not None:
            rb = resp.body if isinstance(resp.body, dict) else {}
            je.eval_id = _str(rb.get("EvalID"))
            rattrs: dict[str, Any] = {"job": job, "via": "rpc"}
            if je.eval_id:
                rattrs["eval_id"] = je.eval_id
            if resp.error:
                rattrs["error"] = resp.error[:200]
            je.reply = Event(resp.t_last_ns, resp.sender, reply_name, rattrs)
        if target is self.deregisters:
            self._deregistered(je, bool(attrs["purge"]))
        else:
            target.setdefault(job, []).append(je)
            self._job_seen(job, je.event.t_ns)

    def _update_alloc(self, msg: RpcMessage, item: Any) -> None:
        if not isinstance(item, dict) or not _str(item.get("ID")):
            return
        status = item.get("ClientStatus")
        if not isinstance(status, str):
            return
        a = self._alloc(item["ID"], msg.t_last_ns)
        if a is None:
            return
        self._task_events(msg, a, item.get("TaskStates"))
        if status in a.statuses:
            return
        a.statuses.add(status)
        attrs: dict[str, Any] = {"alloc": a.id, "client_status": status}
        states = item.get("TaskStates")
        if isinstance(states, dict):
            tasks = {
                k: v.get("State")
                for k, v in states.items()
                if isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("State"), str)
            }
            if tasks:
                attrs["tasks"] = tasks
        ev = Event(msg.t_last_ns, msg.sender, EV_UPDATE, attrs)
        a.events.append(ev)
        if status == "running" and a.running is None:
            a.running = ev
        if status in TERMINAL and a.terminal is None:
            a.terminal = ev
            self._due(a, self.finish_ns if a.purged else self.grace_ns)

    def _task_events(self, msg: RpcMessage, a: _Alloc, states: Any) -> None:
        """Task events carried in an UpdateAlloc's TaskStates (times: the client's clock)."""
        if not isinstance(states, dict):
            return
        for task, state in states.items():
            if not isinstance(task, str) or not isinstance(state, dict):
                continue
            evs = state.get("Events")
            for item in evs if isinstance(evs, list) else []:
                if not isinstance(item, dict):
                    continue
                etype, t = item.get("Type"), item.get("Time")
                if not isinstance(etype, str) or not isinstance(t, int) or t <= 0:
                    continue
                key = (task, etype, t)
                if key in a.task_seen:
                    continue
                a.task_seen.add(key)
                ev = Event(
                    t,
                    msg.sender,
                    EV_TASK_PREFIX + etype,
                    {"alloc": a.id, "task": task, "clock": "client", "via": "Node.UpdateAlloc"},
                )
                a.events.append(ev)
                if etype == "Started" and (a.started is None or t < a.started.t_ns):
                    a.started = ev

    # -- timelines -------------------------------------------------------------------------

    def _register_for(self, a: _Alloc) -> _JobEvent | None:
        if a.job is None:
            return None
        limit = a.reach.t_ns if a.reach is not None else None
        cands = [
            r
            for r in self.registers.get(a.job, ())
            if limit is None or r.event.t_ns <= limit
        ]
        if not cands:
            return None
        for via in ("http", "rpc"):
            same = [r for r in cands if r.via == via]
            if not same:
                continue
            by_eval = [r for r in same if a.eval_id and r.eval_id == a.eval_id]
            return max(by_eval or same, key=lambda r: r.event.t_ns)
        return None

    def _deregister_for(self, a: _Alloc, reg: _JobEvent | None) -> _JobEvent | None:
        """The first deregistration of the alloc's job after its registration."""
        if reg is None:
            return None
        cands = [d for d in self.deregisters.get(reg.job, ()) if d.event.t_ns >= reg.event.t_ns]
        return min(cands, key=lambda d: d.event.t_ns) if cands else None

    def timelines(self, job_runs: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Emit every allocation still held; returns the timeline dicts (vimprof/phases.py
        shape) by first event when no `emit` callback was given, else []. Call it once, at
        the end of the capture (after the unanswered requests were handed over).
        """
        if job_runs is not None:
            self.job_runs = dict(job_runs)
        while self.allocs:
            self._emit(next(iter(self.allocs)))
        out, self._out = self._out, []
        out.sort(key=timeline_key)
        return out

    def _timeline(self, a: _Alloc) -> dict[str, Any]:
        """The timeline dict of one allocation."""
        job_runs = self.job_runs
        issues: list[str] = []
        events = list(a.events)
        reg = self._register_for(a)
        if a.job is None:
            issues.append(
                "job unknown: no Alloc.GetAllocs response for this allocation in the capture"
            )
        elif reg is None:
            issues.append(
                f"missing event {EV_REGISTER} for job {a.job} before the "
                "allocation reached the client"
            )
        if reg is not None:
            events.append(reg.event)
            if reg.reply is not None:
                events.append(reg.reply)
            for d in self.deregisters.get(a.job or "", ()):
                if d.job == a.job and d.event.t_ns >= reg.event.t_ns:
                    events.append(d.event)
                    if d.reply is not None:
                        events.append(d.reply)
        phases: dict[str, dict[str, Any]] = {}
        reg_ev = reg.event if reg is not None else None

        running_name = f"{EV_UPDATE} (client_status running)"
        _phase(phases, issues, "api", reg_ev, reg.reply if reg else None, EV_REGISTER,
               EV_REGISTER_REPLY)
        _phase(phases, issues, "client_pickup", a.reach, a.pull_reply,
               f"{EV_CLIENT_ALLOCS} or {EV_PULL}", EV_PULL_REPLY)
        _phase(phases, issues, "task_start", a.pull_reply, a.started, EV_PULL_REPLY,
               EV_STARTED)
        _phase(phases, issues, "notification", a.started, a.running, EV_STARTED,
               running_name)
        _phase(phases, issues, "commit", a.running, a.running_reply, running_name,
               f"{EV_UPDATE_REPLY} (client_status running)")
        dereg = self._deregister_for(a, reg)
        if dereg is not None and a.terminal is not None:
            _phase(phases, issues, "stop", dereg.event, a.terminal, EV_DEREGISTER,
                   f"{EV_UPDATE} (terminal client_status)")
        elif dereg is not None:
            issues.append(
                f"stop left out: missing event {EV_UPDATE} (terminal client_status) "
                "after Job.Deregister"
            )
        _phase(
            phases,
            issues,
            "scheduling",
            reg_ev,
            a.reach,
            EV_REGISTER,
            f"{EV_CLIENT_ALLOCS} or {EV_PULL}",
        )
        _phase(phases, issues, "instantiation", a.pull, a.running, EV_PULL, running_name)
        _phase(phases, issues, NOMAD.total, reg_ev, a.running, EV_REGISTER, running_name)
        events.sort(key=lambda e: (e.t_ns, e.name))
        return {
            "vim": NOMAD.vim,
            "instance": a.id,
            "job": a.job,
            "run": job_runs.get(a.job) if a.job is not None else None,
            "complete": all(p in phases for p in NOMAD.all),
            "issues": _dedupe(issues),
            "events": [e.as_dict() for e in events],
            "phases": phases,
        }


def timeline_key(tl: dict[str, Any]) -> tuple[int, str]:
    """Order of timelines.jsonl: by first event time, then instance id."""
    return (tl["events"][0]["t_ns"] if tl["events"] else 0, tl["instance"])


def _phase(
    phases: dict[str, dict[str, Any]],
    issues: list[str],
    name: str,
    start: Event | None,
    end: Event | None,
    missing_start: str,
    missing_end: str,
) -> None:
    """Add phase `name` from `start` to `end`, or an issue saying which boundary is missing."""
    if start is None or end is None:
        miss = [m for m, e in ((missing_start, start), (missing_end, end)) if e is None]
        issues.append(f"{name} left out: missing event {' and '.join(miss)}")
        return
    if end.t_ns < start.t_ns:
        issues.append(f"{name} left out: {end.name} precedes {start.name}")
        return
    phases[name] = {
        "start_ns": start.t_ns,
        "end_ns": end.t_ns,
        "ms": round((end.t_ns - start.t_ns) / 1e6, 3),
        "from": start.name,
        "to": end.name,
        "source": SOURCE,
    }


def _dedupe(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for i in items:
        seen.setdefault(i, None)
    return list(seen)


def build_timelines(
    http: Iterable[HttpMessage], rpc: Iterable[RpcMessage], job_runs: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Timeline dicts from HTTP and RPC messages (each in capture order).

    Requests without a response in the capture still count (their reply event is missing).
    `job_runs` maps job id -> the "run" value recorded by the pusher in requests.jsonl.
    """
    t = NomadTimelines(sweep=False)
    for m in http:
        if m.kind != "request" and m.request is not None:
            t.add_http(m)
    for r in _unanswered(http, lambda m: m.kind == "request"):
        t.add_http_request_only(r)
    for m in rpc:
        t.add_rpc(m)
    for r in _unanswered(rpc, lambda m: m.direction == "request"):
        t.add_rpc_request_only(r)
    return t.timelines(job_runs)


def _unanswered(messages: Sequence[Any], is_request: Callable[[Any], bool]) -> list[Any]:
    """Requests among `messages` that no response in `messages` answers, in order."""
    answered = {id(m.request) for m in messages if not is_request(m) and m.request is not None}
    return [m for m in messages if is_request(m) and id(m) not in answered]
