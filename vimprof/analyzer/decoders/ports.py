"""Which TCP ports carry which VIM protocol, i.e. which decoder a connection gets.

Nomad: its HTTP API (4646) and RPC (4647, decoders/nomad_rpc.py); OpenStack: nova-api,
keystone, glance, placement and neutron speak HTTP (decoders/http.py), RabbitMQ AMQP 0-9-1
(decoders/amqp.py). A deployment on other ports adds its own (`Ports`: `vimprof analyze
--http-port/--rpc-port`, or the campaign's manifest `capture.ports`); an extra HTTP port is
Nomad's API. The builders (builders/nova_phases.py) tell OpenStack's services apart by these
ports too.

Analyzer stage 3, decoders (vimprof/analyzer/__init__.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vimprof.rundir import RunDir

NOMAD_HTTP_PORTS = (4646,)
NOMAD_RPC_PORTS = (4647,)
NOVA_API_PORTS = (8774,)
KEYSTONE_PORTS = (5000, 35357)
GLANCE_PORTS = (9292,)
PLACEMENT_PORTS = (8778,)
NEUTRON_PORTS = (9696,)
AMQP_PORTS = (5672, 5671)
NOVA_HTTP_PORTS = NOVA_API_PORTS + KEYSTONE_PORTS + GLANCE_PORTS + PLACEMENT_PORTS + NEUTRON_PORTS
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
