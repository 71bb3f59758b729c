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
(the lazy notification, nomad-internals.md section 3); stop = Job.Deregister request ->
Node.UpdateAlloc request with a terminal ClientStatus (complete, failed, lost).
A phase whose boundary is missing is left out, the record gets complete=false and an issue.

Event attrs carry only ids, method names, statuses and paths (query strings dropped), never
bodies or headers, so no credential reaches a timeline.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vimprof.analyzer.http import HttpMessage
from vimprof.analyzer.nomad_rpc import RpcMessage
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
    statuses: set[str] = field(default_factory=set)
    pull_reply: Event | None = None
    started: Event | None = None  # first task "Started" event (client clock)
    terminal: Event | None = None  # first Node.UpdateAlloc request with a terminal status
    task_seen: set[tuple[str, str, int]] = field(default_factory=set)
    modify_index: Any = None


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
    """Collects Nomad events from messages, then builds one timeline per allocation."""

    def __init__(self) -> None:
        # job id -> its registrations / deregistrations, in capture order
        self.registers: dict[str, list[_JobEvent]] = {}
        self.deregisters: dict[str, list[_JobEvent]] = {}
        self.allocs: dict[str, _Alloc] = {}

    def _alloc(self, alloc_id: str) -> _Alloc:
        a = self.allocs.get(alloc_id)
        if a is None:
            a = self.allocs[alloc_id] = _Alloc(alloc_id)
        return a

    # -- HTTP ------------------------------------------------------------------------------

    def add_http(self, msg: HttpMessage) -> None:
        """A response with its request (requests are handled through their response)."""
        if msg.kind == "response" and msg.request is not None:
            self._http_exchange(msg.request, msg)

    def add_http_request_only(self, req: HttpMessage) -> None:
        """A request whose response is not in the capture."""
        self._http_exchange(req, None)

    def _http_exchange(self, req: HttpMessage, resp: HttpMessage | None) -> None:
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
            self.deregisters.setdefault(job, []).append(je)

    # -- RPC -------------------------------------------------------------------------------

    def add_rpc(self, msg: RpcMessage) -> None:
        body = msg.body if isinstance(msg.body, dict) else {}
        method = msg.method
        if msg.direction == "request":
            if method == "Alloc.GetAllocs":
                ids = body.get("AllocIDs")
                for aid in ids if isinstance(ids, list) else []:
                    if not isinstance(aid, str):
                        continue
                    a = self._alloc(aid)
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
                    a = self._alloc(aid)
                    if a.modify_index == index and a.events:
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
                a = self._alloc(item["ID"])
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
                a.events.append(Event(msg.t_last_ns, msg.sender, EV_UPDATE_REPLY, attrs))
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
        target.setdefault(job, []).append(je)

    def _update_alloc(self, msg: RpcMessage, item: Any) -> None:
        if not isinstance(item, dict) or not _str(item.get("ID")):
            return
        status = item.get("ClientStatus")
        if not isinstance(status, str):
            return
        a = self._alloc(item["ID"])
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
        """One timeline dict per allocation (shape in vimprof/phases.py), by first event.

        Consumes the collected allocations (call it once).
        """
        job_runs = job_runs or {}
        out = []
        while self.allocs:  # consumed as built: Event objects go as their dicts appear
            _id, a = self.allocs.popitem()
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
            out.append(
                {
                    "vim": NOMAD.vim,
                    "instance": a.id,
                    "job": a.job,
                    "run": job_runs.get(a.job) if a.job is not None else None,
                    "complete": all(p in phases for p in NOMAD.all),
                    "issues": _dedupe(issues),
                    "events": [e.as_dict() for e in events],
                    "phases": phases,
                }
            )
        out.sort(key=lambda r: (r["events"][0]["t_ns"] if r["events"] else 0, r["instance"]))
        return out


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
    t = NomadTimelines()
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
