"""Nova server timelines from captured HTTP (nova-api, keystone, glance) and AMQP messages.

Sources: shared/design/nova-internals.md section 2 (the boot sequence and the phase table).
One timeline per server (instance uuid), shape as vimprof/phases.py, "vim": "nova".

Events (source "capture", `host` = sender's IP, `t_ns` ns since epoch):

| name                                | from                                          | time      |
|-------------------------------------|-----------------------------------------------|-----------|
| POST /servers request / response    | nova-api (8774); uuid from the 202 body       | first/last|
| keystone token validation req/resp  | GET /v3/auth/tokens in the window (1)          | first/last|
| glance image GET request/response   | GET /v2/images/<id> (+ /file) by Nova         | first/last|
| schedule_and_build_instances cast   | AMQP, args.request_specs / build_requests     | first     |
| select_destinations call / reply    | AMQP; the reply matched by _msg_id            | first/last|
| build_and_run_instance cast         | AMQP to compute.<host>                        | first     |
| instance save task_state=<s>        | object_action save setting a new task_state   | first     |
| instance save vm_state=<s>          | object_action save setting a new vm_state     | first     |
| update_instance_info fanout         | AMQP fanout to the schedulers                 | first     |
| GET /servers/<id> ACTIVE            | the client's first poll answered ACTIVE (once)| last      |
| DELETE /servers request / response  | nova-api                                      | first/last|
| terminate_instance cast             | AMQP                                          | first     |
| GET /servers/<id> 404               | the client's first poll after the delete      | last      |
| instance action event <e> start/finish | InstanceActionEvent.event_start / event_finish | first  |
|                                     | (compute's own action record; failure flag)   |           |
| instance destroy                    | object_action destroy of the Instance         | first     |

An AMQP message crosses a broker capture twice (publish, then deliver); both carry the same
_unique_id and count once, at the earliest time seen (the latest for replies: when the
caller got it). Correlation: instance uuid in the RPC args; replies by _msg_id; keystone and
glance requests by X-OpenStack-Request-ID (Nova sends its request id on outgoing calls),
else by falling inside exactly one POST /servers window.

Phases (vimprof/phases.py NOVA): api = POST -> 202; conductor = schedule_and_build_instances
cast -> select_destinations call; scheduler = select_destinations call -> its reply;
conductor_build = that reply -> build_and_run_instance cast; compute =
build_and_run_instance cast -> save vm_state active; ready = vm_state active -> the client's
first ACTIVE (else the update_instance_info fanout); total = POST -> first ACTIVE (else
vm_state active). Inside: keystone (nova-api's token validation: first request -> last
response, leaving out (1) validations that start during a glance GET, which are glance-api
checking the token nova-api passed on), glance (first request -> last response), network (save
task_state networking -> the next task_state save), spawn (save task_state spawning -> save
vm_state active). Delete path: delete = DELETE request -> first 404 (else the Instance
destroy, else the save of vm_state deleted). A server whose boot is not in the capture gets
one issue instead of one per boot phase. No credential reaches a timeline (decoders/oslo.py
scrub, decoders/http.py).

Streaming (flat memory, when the pipeline calls `tick(now_ns)` as capture time advances):
AMQP messages and keystone/glance exchanges are correlated `settle_ns` (10 s) after they
started (both crossings of a message merged, the POST /servers windows known by then), in
start order as above; a server is emitted (`emit` callback) and dropped `settle_ns` +
`grace_ns` (5 s) after its first 404, or after `idle_ns` (300 s) without news, the rest at
the end. Later messages about an emitted server are ignored (`late`); request ids, windows,
pending calls and processed message ids are forgotten after `idle_ns`, emitted servers
(their ids and request ids) after 3 `idle_ns`, at least 10 min.

Analyzer stage 4, builders (vimprof/analyzer/__init__.py): HttpMessage / AmqpMessage in
(through builders/router.py), Nova timeline dicts out, to the pipeline's enrichment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from vimprof.analyzer.builders.nomad_phases import Event, _dedupe, _phase, gone_ns
from vimprof.analyzer.decoders.amqp import AmqpMessage
from vimprof.analyzer.decoders.http import HttpMessage
from vimprof.analyzer.decoders.oslo import (
    OsloMessage,
    decode_body,
    instance_uuids,
    obj_changes,
    obj_data,
)
from vimprof.analyzer.decoders.ports import GLANCE_PORTS, KEYSTONE_PORTS, NOVA_API_PORTS
from vimprof.phases import NOVA

SETTLE_NS = 10_000_000_000  # AMQP / keystone / glance correlated this long after their start
GRACE_NS = 5_000_000_000  # a server's last messages after its first 404
IDLE_NS = 300_000_000_000  # a server, request id, window... without news this long goes

EV_POST = "POST /servers request"
EV_POST_REPLY = "POST /servers response"
EV_KEYSTONE = "keystone token validation request"
EV_KEYSTONE_REPLY = "keystone token validation response"
EV_GLANCE = "glance image GET request"
EV_GLANCE_REPLY = "glance image GET response"
EV_SCHED_BUILD = "schedule_and_build_instances cast"
EV_SELECT = "select_destinations call"
EV_SELECT_REPLY = "select_destinations reply"
EV_BUILD = "build_and_run_instance cast"
EV_SAVE_TASK = "instance save task_state="
EV_SAVE_VM = "instance save vm_state="
EV_ACTIVE_SAVE = EV_SAVE_VM + "active"
EV_INFO = "update_instance_info fanout"
EV_ACTIVE = "GET /servers/<id> ACTIVE"
EV_DELETE = "DELETE /servers request"
EV_DELETE_REPLY = "DELETE /servers response"
EV_TERMINATE = "terminate_instance cast"
EV_GONE = "GET /servers/<id> 404"
EV_ACTION = "instance action event "  # + "<event> start" / "<event> finish"
EV_DESTROY = "instance destroy"

_SERVERS = re.compile(r"^(?:/compute)?(?:/v2(?:\.1)?)?(?:/[0-9a-f]{32})?/servers/?$")
_SERVER = re.compile(
    r"^(?:/compute)?(?:/v2(?:\.1)?)?(?:/[0-9a-f]{32})?/servers/([0-9a-f-]{36})/?$"
)
_IMAGE = re.compile(r"^(?:/image)?/v2/images/([0-9a-f-]{36})(/file)?/?$")
_TOKENS = re.compile(r"^(?:/identity)?/v3/auth/tokens/?$")


def _path(raw: str) -> str:
    return raw.split("?", 1)[0]


def _json(msg: HttpMessage) -> Any:
    if not msg.body:
        return None
    try:
        return json.loads(msg.body)
    except (ValueError, RecursionError):
        return None


@dataclass
class _Server:
    uuid: str
    events: list[Event] = field(default_factory=list)
    post: HttpMessage | None = None
    post_reply: HttpMessage | None = None
    request_ids: set[str] = field(default_factory=set)
    first: dict[str, Event] = field(default_factory=dict)  # event name -> first occurrence
    state: dict[str, Any] = field(default_factory=dict)  # last task_state / vm_state saved
    api: bool = False  # seen on nova-api (POST, GET ACTIVE, DELETE)
    last_t: int = 0  # capture time of the last message about it

    def add(self, ev: Event) -> None:
        self.events.append(ev)
        old = self.first.get(ev.name)
        if old is None or ev.t_ns < old.t_ns:
            self.first[ev.name] = ev


@dataclass
class _Rpc:
    """One oslo message, counted once across its publish and its delivery."""

    msg: OsloMessage
    exchange: str
    routing_key: str
    t_first: int
    t_last: int
    sender: str
    key: str = ""


class NovaTimelines:
    """Collects Nova events from HTTP and AMQP messages, then builds one timeline per server.

    `emit(timeline)`: called with each server's timeline dict (else `timelines()` returns
    them); `runs`: server uuid -> run (requests.jsonl).
    """

    def __init__(
        self,
        emit: Callable[[dict[str, Any]], None] | None = None,
        runs: dict[str, Any] | None = None,
        *,
        settle_ns: int = SETTLE_NS,
        grace_ns: int = GRACE_NS,
        idle_ns: int = IDLE_NS,
    ) -> None:
        self.emit = emit
        self.runs = dict(runs or {})
        self.emitted = 0
        self.settle_ns, self.grace_ns, self.idle_ns = settle_ns, grace_ns, idle_ns
        self.now = 0
        self.done: dict[str, int] = {}  # uuid -> capture time at which to emit it
        self.gone: dict[str, tuple[int, set[str]]] = {}  # emitted uuid -> (when, request ids)
        self.calls: dict[str, tuple[list[str], int]] = {}  # select_destinations _msg_id
        self.seen_rpc: dict[str, int] = {}  # keys of messages already correlated -> when
        self.late = 0
        self._out: list[dict[str, Any]] = []
        self.servers: dict[str, _Server] = {}
        self.by_request_id: dict[str, str] = {}
        self.rpcs: dict[str, _Rpc] = {}  # unique id (or a stand-in) -> message
        self.windows: list[tuple[int, int, str]] = []  # POST /servers windows -> uuid
        self.side_http: list[tuple[HttpMessage, HttpMessage | None]] = []
        self.undecodable = 0

    def _server(self, uuid: str) -> _Server | None:
        """The live server `uuid` (created if new), None if already emitted."""
        s = self.servers.get(uuid)
        if s is None:
            if uuid in self.gone:
                self.late += 1
                return None
            s = self.servers[uuid] = _Server(uuid)
        s.last_t = self.now
        return s

    # -- input -----------------------------------------------------------------------------

    def add_http(self, req: HttpMessage, resp: HttpMessage | None) -> None:
        """One HTTP exchange (resp None when the response is not in the capture)."""
        self.now = max(self.now, resp.t_last_ns if resp is not None else req.t_last_ns)
        port = req.conn[3]
        path = _path(req.path)
        if port in NOVA_API_PORTS:
            self._nova_api(req, resp, path)
        elif port in KEYSTONE_PORTS or port in GLANCE_PORTS:
            self.side_http.append((req, resp))

    def _nova_api(self, req: HttpMessage, resp: HttpMessage | None, path: str) -> None:
        m = _SERVER.match(path)
        if req.method == "POST" and _SERVERS.match(path):
            doc = _json(resp) if resp is not None else None
            server = doc.get("server") if isinstance(doc, dict) else None
            uuid = server.get("id") if isinstance(server, dict) else None
            if not isinstance(uuid, str) or resp is None:
                return
            s = self._server(uuid)
            if s is None:
                return
            s.api = True
            s.post, s.post_reply = req, resp
            attrs: dict[str, Any] = {"server": uuid, "status": resp.status}
            for h in ("x-openstack-request-id", "x-compute-request-id"):
                v = resp.headers.get(h)
                if v:
                    attrs["request_id"] = v
                    s.request_ids.add(v)
            g = req.headers.get("x-openstack-request-id")
            if g:
                attrs["global_request_id"] = g
                s.request_ids.add(g)
            for rid in s.request_ids:
                self.by_request_id[rid] = uuid
            s.add(Event(req.t_first_ns, req.conn[0], EV_POST, {"server": uuid, "path": path}))
            s.add(Event(resp.t_last_ns, req.conn[2], EV_POST_REPLY, attrs))
            self.windows.append((req.t_first_ns, resp.t_last_ns, uuid))
        elif m and resp is not None:
            uuid = m.group(1)
            if req.method == "GET":
                if resp.status == 404:
                    s = self.servers.get(uuid)
                    if s is not None and s.api:
                        self._server(uuid)
                        s.add(Event(resp.t_last_ns, req.conn[2], EV_GONE, {"server": uuid}))
                        due = self.now + self.settle_ns + self.grace_ns
                        self.done[uuid] = min(self.done.get(uuid, due), due)
                    return
                doc = _json(resp)
                server = doc.get("server") if isinstance(doc, dict) else None
                if isinstance(server, dict) and server.get("status") == "ACTIVE":
                    s = self._server(uuid)
                    if s is not None:
                        s.api = True
                        if EV_ACTIVE not in s.first:
                            s.add(Event(resp.t_last_ns, req.conn[2], EV_ACTIVE,
                                        {"server": uuid}))
            elif req.method == "DELETE":
                s = self._server(uuid)
                if s is None:
                    return
                s.api = True
                s.add(Event(req.t_first_ns, req.conn[0], EV_DELETE, {"server": uuid}))
                s.add(Event(resp.t_last_ns, req.conn[2], EV_DELETE_REPLY,
                            {"server": uuid, "status": resp.status}))

    def add_amqp(self, msg: AmqpMessage) -> None:
        """One AMQP message (publish or delivery) in capture order."""
        if not msg.complete or len(msg.body) < msg.body_size:
            return
        self.now = max(self.now, msg.t_last_ns)
        om = decode_body(msg.body)
        if om is None:
            self.undecodable += 1
            return
        key = om.unique_id or f"{om.kind}:{om.msg_id}:{om.method}:{msg.t_first_ns}"
        if key in self.seen_rpc:
            self.late += 1  # its other crossing, after it was correlated
            return
        old = self.rpcs.get(key)
        if old is None:
            self.rpcs[key] = _Rpc(om, msg.exchange, msg.routing_key, msg.t_first_ns,
                                  msg.t_last_ns, msg.sender, key)
        else:
            old.t_first = min(old.t_first, msg.t_first_ns)
            old.t_last = max(old.t_last, msg.t_last_ns)
            old.exchange = old.exchange or msg.exchange

    # -- correlation -----------------------------------------------------------------------

    def _side_events(self, side: list[tuple[HttpMessage, HttpMessage | None]]) -> None:
        for req, resp in side:
            path = _path(req.path)
            port = req.conn[3]
            if port in KEYSTONE_PORTS:
                if req.method != "GET" or not _TOKENS.match(path):
                    continue  # a client's own POST /v3/auth/tokens is not nova-api's check
                names = (EV_KEYSTONE, EV_KEYSTONE_REPLY)
            else:
                im = _IMAGE.match(path)
                if req.method not in ("GET", "HEAD") or not im:
                    continue
                names = (EV_GLANCE, EV_GLANCE_REPLY)
            uuid = self.by_request_id.get(req.headers.get("x-openstack-request-id", ""))
            if uuid is None:
                inside = {u for a, b, u in self.windows if a <= req.t_first_ns <= b}
                if len(inside) != 1:
                    continue
                uuid = inside.pop()
            s = self._server(uuid)
            if s is None:
                continue
            attrs: dict[str, Any] = {"server": uuid, "path": path}
            s.add(Event(req.t_first_ns, req.conn[0], names[0], attrs))
            if resp is not None:
                s.add(Event(resp.t_last_ns, req.conn[2], names[1],
                            dict(attrs, status=resp.status)))

    def _rpc_events(self, rpcs: list[_Rpc]) -> None:
        calls = self.calls  # select_destinations _msg_id -> (instance uuids, when)
        for r in sorted(rpcs, key=lambda r: r.t_first):
            om = r.msg
            if om.kind == "reply":
                if om.failure is None and not om.ending and om.result is None:
                    continue  # not the final reply
                for u in calls.get(om.msg_id, ([], 0))[0]:
                    attrs: dict[str, Any] = {"server": u, "msg_id": om.msg_id}
                    if om.failure:
                        attrs["failure"] = True
                    s = self._server(u)
                    if s is not None:
                        s.add(Event(r.t_last, r.sender, EV_SELECT_REPLY, attrs))
                continue
            uuids = instance_uuids(om)
            if om.method == "select_destinations" and om.msg_id:
                calls[om.msg_id] = (uuids, self.now)
            for u in uuids:
                self._rpc_event(r, om, u)

    def _rpc_event(self, r: _Rpc, om: OsloMessage, uuid: str) -> None:
        s = self._server(uuid)
        if s is None:
            return
        attrs: dict[str, Any] = {"server": uuid, "routing_key": r.routing_key}
        if r.exchange:
            attrs["exchange"] = r.exchange
        if om.msg_id:
            attrs["msg_id"] = om.msg_id
        rid = om.global_request_id or om.request_id
        if rid:
            attrs["request_id"] = rid
        m = om.method
        if m == "schedule_and_build_instances":
            s.add(Event(r.t_first, r.sender, EV_SCHED_BUILD, attrs))
        elif m == "select_destinations":
            s.add(Event(r.t_first, r.sender, EV_SELECT, attrs))
        elif m == "build_and_run_instance":
            node = om.args.get("node")
            if isinstance(node, str):
                attrs["node"] = node
            s.add(Event(r.t_first, r.sender, EV_BUILD, attrs))
        elif m == "terminate_instance":
            s.add(Event(r.t_first, r.sender, EV_TERMINATE, attrs))
        elif m == "update_instance_info":
            s.add(Event(r.t_first, r.sender, EV_INFO, attrs))
        elif m == "object_class_action_versions":
            # InstanceActionEvent.event_start / event_finish[_with_failure](uuid, event name)
            if om.args.get("objname") != "InstanceActionEvent":
                return
            objmethod = om.args.get("objmethod")
            args = om.args.get("args")
            event = args[1] if isinstance(args, list) and len(args) > 1 else None
            if not isinstance(event, str) or not isinstance(objmethod, str):
                return
            if objmethod == "event_start":
                s.add(Event(r.t_first, r.sender, f"{EV_ACTION}{event} start", attrs))
            elif objmethod.startswith("event_finish"):
                # EventReporter always calls event_finish_with_failure; exc_val says if it was
                kw = om.args.get("kwargs")
                fail = isinstance(kw, dict) and kw.get("exc_val") is not None
                s.add(Event(r.t_first, r.sender, f"{EV_ACTION}{event} finish",
                            dict(attrs, failure=True) if fail else attrs))
        elif m == "object_action":
            objinst = om.args.get("objinst")
            data = obj_data(objinst, "Instance") or {}
            changes = obj_changes(objinst)
            objmethod = om.args.get("objmethod")
            if objmethod == "destroy" and data:
                s.add(Event(r.t_first, r.sender, EV_DESTROY, dict(attrs, objmethod=objmethod)))
                return
            if objmethod != "save":
                return  # refresh etc. carry the stale state, not a transition
            for fld, prefix in (("task_state", EV_SAVE_TASK), ("vm_state", EV_SAVE_VM)):
                # Nova lists a field in the changes at every save that sets it, even to the
                # same value: a transition is a value different from the last one seen
                if fld in changes and (fld not in s.state or s.state[fld] != data.get(fld)):
                    s.state[fld] = data.get(fld)
                    s.add(Event(r.t_first, r.sender, f"{prefix}{data.get(fld)}", attrs))

    # -- output ----------------------------------------------------------------------------

    def _correlate(self, before_ns: int | None) -> None:
        """Turn the exchanges and messages started before `before_ns` (None: all) into
        events, keystone/glance first, then AMQP in start order (as offline)."""
        if before_ns is None:
            side, self.side_http = self.side_http, []
            rpcs = list(self.rpcs.values())
            self.rpcs = {}
        else:
            side = [x for x in self.side_http if x[0].t_first_ns < before_ns]
            if side:
                self.side_http = [x for x in self.side_http if x[0].t_first_ns >= before_ns]
            rpcs = [r for r in self.rpcs.values() if r.t_first < before_ns]
            for r in rpcs:
                del self.rpcs[r.key]
                self.seen_rpc[r.key] = self.now
        self._side_events(side)
        self._rpc_events(rpcs)

    def tick(self, now_ns: int) -> None:
        """Capture time advanced to `now_ns`: correlate what has settled, emit the servers
        that are due, forget stale state (module docstring, "Streaming")."""
        self.now = now = max(self.now, now_ns)
        self._correlate(now - self.settle_ns)
        for uuid in [u for u, due in self.done.items() if due <= now]:
            self._emit(uuid)
        idle = now - self.idle_ns
        for uuid in [u for u, s in self.servers.items() if s.last_t < idle]:
            self._emit(uuid)
        if self.windows and self.windows[0][1] < idle:
            self.windows = [w for w in self.windows if w[1] >= idle]
        forget = now - gone_ns(self.idle_ns)
        for uuid in [u for u, (t, _r) in self.gone.items() if t < forget]:
            for rid in self.gone.pop(uuid)[1]:
                if self.by_request_id.get(rid) == uuid:
                    del self.by_request_id[rid]
        for mid in [m for m, (_u, t) in self.calls.items() if t < idle]:
            del self.calls[mid]
        for key in [k for k, t in self.seen_rpc.items() if t < idle]:
            del self.seen_rpc[key]

    def _emit(self, uuid: str) -> None:
        s = self.servers.pop(uuid)
        self.done.pop(uuid, None)
        self.gone[uuid] = (self.now, s.request_ids)
        tl = self._timeline(s, self.runs)
        self.emitted += 1
        if self.emit is not None:
            self.emit(tl)
        else:
            self._out.append(tl)

    def live(self) -> dict[str, int]:
        """Sizes of the state held (bounded when ticked, not growing with the capture)."""
        return {"servers": len(self.servers), "rpcs": len(self.rpcs),
                "side_http": len(self.side_http), "windows": len(self.windows),
                "request_ids": len(self.by_request_id), "calls": len(self.calls),
                "seen_rpc": len(self.seen_rpc), "gone": len(self.gone)}

    def timelines(self, runs: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Emit every server still held: one timeline dict per server (vimprof/phases.py
        shape); returned by first event when no `emit` callback was given, else []."""
        self._correlate(None)
        if runs is not None:
            self.runs = dict(runs)
        for uuid in list(self.servers):
            self._emit(uuid)
        out, self._out = self._out, []
        out.sort(key=lambda r: (r["events"][0]["t_ns"] if r["events"] else 0, r["instance"]))
        return out

    def _timeline(self, s: _Server, runs: dict[str, Any]) -> dict[str, Any]:
        f = s.first
        issues: list[str] = []
        phases: dict[str, dict[str, Any]] = {}
        boot_seen = any(n in f for n in (EV_POST, EV_SCHED_BUILD, EV_SELECT, EV_BUILD))
        if s.post is None:
            issues.append(f"missing event {EV_POST} for this server (boot not captured)")

        def ph(name: str, a: str, b: str | tuple[str, ...], required: bool = True) -> None:
            ends = (b,) if isinstance(b, str) else b
            end = next((f[e] for e in ends if e in f), None)
            if not required and (a not in f or end is None):
                return
            _phase(phases, issues, name, f.get(a), end, a, " or ".join(ends))

        ph("api", EV_POST, EV_POST_REPLY, boot_seen)
        ph("conductor", EV_SCHED_BUILD, EV_SELECT, boot_seen)
        ph("scheduler", EV_SELECT, EV_SELECT_REPLY, boot_seen)
        ph("conductor_build", EV_SELECT_REPLY, EV_BUILD, boot_seen)
        ph("compute", EV_BUILD, EV_ACTIVE_SAVE, boot_seen)
        ph("ready", EV_ACTIVE_SAVE, (EV_ACTIVE, EV_INFO), boot_seen)
        ph(NOVA.total, EV_POST, (EV_ACTIVE, EV_ACTIVE_SAVE), boot_seen)
        ph("spawn", EV_SAVE_TASK + "spawning", EV_ACTIVE_SAVE, required=False)
        self._span(phases, s, "keystone", EV_KEYSTONE, EV_KEYSTONE_REPLY,
                   exclude=self._pairs(s, EV_GLANCE, EV_GLANCE_REPLY))
        self._span(phases, s, "glance", EV_GLANCE, EV_GLANCE_REPLY)
        net = f.get(EV_SAVE_TASK + "networking")
        if net is not None:
            nxt = min(
                (e for e in s.events if e.name.startswith(EV_SAVE_TASK) and e.t_ns > net.t_ns),
                key=lambda e: e.t_ns,
                default=None,
            )
            _phase(phases, issues, "network", net, nxt, net.name, "next task_state save")
        if EV_DELETE in f:
            ph(NOVA.stop, EV_DELETE, (EV_GONE, EV_DESTROY, EV_SAVE_VM + "deleted"))
        events = sorted(s.events, key=lambda e: (e.t_ns, e.name))
        return {
            "vim": NOVA.vim,
            "instance": s.uuid,
            "job": next(iter(sorted(s.request_ids)), None),
            "run": runs.get(s.uuid),
            "complete": all(p in phases for p in NOVA.all),
            "issues": _dedupe(issues),
            "events": [e.as_dict() for e in events],
            "phases": phases,
        }

    @staticmethod
    def _pairs(s: _Server, a: str, b: str) -> list[tuple[Event, Event]]:
        """The server's `a` request events with their `b` responses, paired in time order
        (the exchanges of one kind run one after another)."""
        starts = sorted((e for e in s.events if e.name == a), key=lambda e: e.t_ns)
        ends = sorted((e for e in s.events if e.name == b), key=lambda e: e.t_ns)
        return list(zip(starts, ends, strict=False))

    @classmethod
    def _span(cls, phases: dict[str, Any], s: _Server, name: str, a: str, b: str,
              exclude: list[tuple[Event, Event]] = ()) -> None:
        """Phase `name` = first `a` -> last `b`, leaving out exchanges that start inside an
        `exclude` exchange: a token validation during a glance GET is glance-api checking
        the token nova-api passed on, not nova-api's own (both come from the cloud's IP with
        the same User-Agent, python-keystoneclient)."""
        pairs = [(x, y) for x, y in cls._pairs(s, a, b)
                 if not any(g.t_ns <= x.t_ns <= h.t_ns for g, h in exclude)]
        if pairs:
            end = max((y for _, y in pairs), key=lambda e: e.t_ns)
            _phase(phases, [], name, pairs[0][0], end, a, b)


def build_nova_timelines(
    http: Iterable[HttpMessage],
    amqp: Iterable[AmqpMessage],
    runs: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Nova timeline dicts from HTTP and AMQP messages (each in capture order).

    `runs` maps server uuid -> the "run" value of requests.jsonl. Servers seen only in RPC
    (their POST not captured) still get a timeline, with complete=false and an issue.
    """
    t = NovaTimelines()
    http = list(http)
    answered = {id(m.request) for m in http if m.kind == "response" and m.request is not None}
    for m in http:
        if m.kind == "response" and m.request is not None:
            t.add_http(m.request, m)
        elif m.kind == "request" and id(m) not in answered:
            t.add_http(m, None)
    for a in amqp:
        t.add_amqp(a)
    return t.timelines(runs)
