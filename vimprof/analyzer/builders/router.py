"""Decoded messages to the VIM phase builders: the entry of the builders stage.

The pipeline hands every message to MessageRouter as its decoder completes it (HTTP, Nomad
RPC, AMQP). HTTP requests wait here for their response (the builders take exchanges); the
HTTP ports that are Nomad's API go to the Nomad builder (builders/nomad_phases.py), the
others (OpenStack's) and AMQP to the Nova builder (builders/nova_phases.py), Nomad RPC to
the Nomad builder. The capture clock (the latest message time) drives the builders'
expiry: requests unanswered for IDLE_NS are handed over alone, Nova's correlation windows
are ticked once a second of capture time. Out go timeline dicts (vimprof/phases.py shape),
one per instance as soon as it is finished, to `emit`.

Analyzer stage 4, builders (vimprof/analyzer/__init__.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from vimprof.analyzer.builders.nomad_phases import IDLE_NS, NomadTimelines
from vimprof.analyzer.builders.nova_phases import NovaTimelines
from vimprof.analyzer.decoders.amqp import AmqpMessage
from vimprof.analyzer.decoders.http import HttpMessage
from vimprof.analyzer.decoders.nomad_rpc import RpcMessage
from vimprof.analyzer.decoders.ports import NOMAD_HTTP_PORTS


class MessageRouter:
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
