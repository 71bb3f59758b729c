"""Nova workload pusher (openstacksdk): boot a micro-VNF server, wait ACTIVE, delete, wait 404.

One run = POST /v2.1/servers (networks "none", microversion >= 2.37; 2.52 by default so the
server carries a tag), poll GET /v2.1/servers/{id} every `poll_s` (default 50 ms) until ACTIVE
(or ERROR, recorded with Nova's fault message), DELETE, poll until 404. Runs are sequential, each
cleaned up before the next (Ventre et al. 2016, Sec. V).

Every request carries an X-OpenStack-Request-ID (`req-<uuid>`, keystoneauth's global request id):
one id for the create and its polls, another for the delete and its polls, so the analyzer can
follow a run into Nova's RPC (`_context_global_request_id`) and its calls to Glance, Placement and
Neutron. After each run the server's instance actions and their events
(GET /servers/{id}/os-instance-actions[/{request_id}], microversion 2.62) are fetched with raw
GETs (openstacksdk < 0.103's server_actions is broken) and returned as vim-events records.

Sources: nova/api/openstack/compute/servers.py, instance_actions.py (openstack/nova 26.2.2);
keystoneauth1 session.py (global_request_id); shared/design/nova-internals.md sections 2, 3, 6.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vimprof import interrupts
from vimprof.errors import VimprofError
from vimprof.rundir import now_ns

SERVER_PREFIX = "vimprof-"
TAG = "vimprof"
MICROVERSION = "2.52"  # >= 2.37 (networks "none"), >= 2.52 (tags in the create body)
ACTIONS_MICROVERSION = "2.62"  # instance action events with host/hostId
DELETE_ATTEMPTS = 3


@dataclass
class NovaRunRecord:
    """One instantiation request, as written to requests.jsonl.

    Instants are ns since the Unix epoch (client clock): t_submit_ns (before POST),
    t_accepted_ns (202 received), t_active_ns (first poll answering ACTIVE), t_delete_ns
    (before DELETE), t_deleted_ns (204 received), t_gone_ns (first poll answering 404).
    `request_id` / `delete_request_id` are the global request ids vimprof sent;
    `nova_request_id` is Nova's own id of the POST (the create instance action's request_id).
    `states` lists the (t_ns, status, task_state) transitions the polls saw.
    """

    run: int
    name: str
    ok: bool = False
    error: str | None = None
    fault: str | None = None
    server_id: str | None = None
    status: str | None = None
    host: str | None = None
    request_id: str | None = None
    delete_request_id: str | None = None
    nova_request_id: str | None = None
    t_submit_ns: int | None = None
    t_accepted_ns: int | None = None
    t_active_ns: int | None = None
    t_delete_ns: int | None = None
    t_deleted_ns: int | None = None
    t_gone_ns: int | None = None
    polls: int = 0
    delete_attempts: int = 0
    states: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The requests.jsonl record: fields above plus vim, api_ms, active_ms, delete_ms and
        t_registered_ns / t_running_ns (aliases of t_accepted_ns / t_active_ns)."""
        d = dict(self.__dict__)
        d.pop("actions")
        d["vim"] = "nova"
        for a, b, name in (
            ("t_submit_ns", "t_accepted_ns", "api_ms"),
            ("t_submit_ns", "t_active_ns", "active_ms"),
            ("t_delete_ns", "t_gone_ns", "delete_ms"),
        ):
            d[name] = (d[b] - d[a]) / 1e6 if d[a] and d[b] else None
        # the names the analyzer's cross-checks share with the Nomad pusher
        d["t_registered_ns"], d["t_running_ns"] = d["t_accepted_ns"], d["t_active_ns"]
        return d


@dataclass(frozen=True)
class ServerSpec:
    """What each run boots: Glance image and Nova flavor ids, poll interval (s), timeout (s)."""

    image_id: str
    flavor_id: str
    poll_s: float = 0.05
    timeout_s: float = 120.0


def new_request_id() -> str:
    """A fresh X-OpenStack-Request-ID value, `req-<uuid4>` (the only form Nova accepts)."""
    return f"req-{uuid.uuid4()}"


def iso_to_ns(text: str | None) -> int | None:
    """Nova's timestamps ('2026-11-21T14:02:03.000000', UTC, maybe with +00:00/Z) to ns."""
    if not text:
        return None
    text = text.replace("Z", "+00:00")
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


class NovaPusher:
    """Drives one Nova through openstacksdk's compute proxy (raw requests, timed here).

    `conn` is an openstack.connection.Connection. Raises VimprofError from `check()` when the
    cloud is unreachable, refuses the credentials, or lacks the image or flavor.
    """

    def __init__(self, conn: Any, microversion: str = MICROVERSION):
        if tuple(int(x) for x in microversion.split(".")) < (2, 37):
            raise VimprofError(f"microversion {microversion} < 2.37: networks 'none' needs 2.37")
        self.conn = conn
        self.mv = microversion

    # -- cloud facts -------------------------------------------------------------------------

    def check(self, spec: ServerSpec | None = None) -> dict[str, Any]:
        """Authenticate, read Nova's version document and, with `spec`, the image and flavor.

        Returns {"compute_version": max microversion, "auth_url", "compute_url"}. Raises
        VimprofError (before any server request) with what to fix.
        """
        from keystoneauth1 import exceptions as ks_exc

        auth_url = str(self.conn.config.get_auth_args().get("auth_url"))
        try:
            self.conn.authorize()
        except Exception as exc:  # noqa: BLE001 - openstacksdk wraps keystoneauth's errors
            chain = [exc, exc.__cause__, exc.__context__]
            if any(isinstance(e, ks_exc.Unauthorized) for e in chain) or \
                    getattr(exc, "status_code", None) == 401:
                raise VimprofError(
                    f"Keystone at {auth_url} refused the credentials: check the cloud's "
                    "username, password and project (clouds.yaml / OS_* variables)") from None
            unreachable = (ks_exc.ConnectFailure, ks_exc.ConnectTimeout, ks_exc.DiscoveryFailure)
            if any(isinstance(e, unreachable) for e in chain):
                raise VimprofError(
                    f"the cloud is unreachable at {auth_url} ({type(exc).__name__}): start it "
                    "(`vimprof lab up nova`) or pass the right --os-cloud") from None
            raise VimprofError(f"authenticating at {auth_url} failed: {exc}") from None
        try:
            compute_url = self.conn.compute.get_endpoint()
            resp = self.conn.compute.get("/", raise_exc=False)
        except ks_exc.ClientException as exc:
            raise VimprofError(f"Nova is unreachable ({exc}): is nova-api running?") from None
        if resp.status_code >= 400:
            raise VimprofError(f"Nova answered HTTP {resp.status_code} on its version document")
        version = resp.json().get("version", {}).get("version", "")
        if version and _mv(version) < _mv(self.mv):
            raise VimprofError(f"Nova supports microversions up to {version}; vimprof needs "
                               f"{self.mv}")
        if spec is not None:
            r = self.conn.compute.get(f"/flavors/{spec.flavor_id}", raise_exc=False)
            if r.status_code == 404:
                raise VimprofError(f"flavor {spec.flavor_id!r} not found in Nova: create it "
                                   "or pass the right --flavor")
            r = self.conn.image.get(f"/images/{spec.image_id}", raise_exc=False)
            if r.status_code == 404:
                raise VimprofError(f"image {spec.image_id!r} not found in Glance: upload it "
                                   "or pass the right --image")
        return {"compute_version": version, "auth_url": auth_url, "compute_url": compute_url}

    # -- one run -----------------------------------------------------------------------------

    def run_once(self, run: int, name: str, spec: ServerSpec, lifetime_s: float = 0.0,
                 keep: bool = False) -> NovaRunRecord:
        """Create, wait ACTIVE, (stay `lifetime_s` s,) delete, wait 404, fetch the instance
        actions; with `keep` return once ACTIVE, the server left for `stop_kept`.

        Never raises for a failed run (recorded in the returned record). KeyboardInterrupt
        propagates once the in-flight server is deleted.
        """
        rec = NovaRunRecord(run=run, name=name)
        interrupted = False
        try:
            self._create(rec, spec)
            if keep:
                rec.ok = True
                return rec
            if lifetime_s > 0:
                time.sleep(lifetime_s)
        except KeyboardInterrupt:
            interrupted = True
        except Exception as exc:  # noqa: BLE001 - a failed run is data, the campaign goes on
            rec.error = _reason(exc)
        return self._finish(rec, spec, interrupted)

    def stop_kept(self, rec: NovaRunRecord, spec: ServerSpec) -> NovaRunRecord:
        """Delete a server `run_once(keep=True)` left ACTIVE, wait 404, fetch its actions."""
        return self._finish(rec, spec, False)

    def _finish(self, rec: NovaRunRecord, spec: ServerSpec, interrupted: bool) -> NovaRunRecord:
        try:
            with interrupts.cleaning(f"deleting server {rec.server_id or rec.name}"):
                if rec.server_id is None and interrupted:
                    self._find_by_name(rec)
                if rec.server_id is not None:
                    self._delete(rec, spec)
        except KeyboardInterrupt:
            interrupted = True
            with contextlib.suppress(Exception):
                self._delete(rec, spec)
        if rec.server_id is not None and not interrupted:
            try:
                rec.actions = self.instance_actions(rec.server_id)
            except Exception as exc:  # noqa: BLE001
                rec.error = rec.error or f"instance actions: {_reason(exc)}"
        if interrupted:
            raise KeyboardInterrupt
        rec.ok = rec.error is None
        return rec

    def _create(self, rec: NovaRunRecord, spec: ServerSpec) -> None:
        body = {"server": {"name": rec.name, "imageRef": spec.image_id,
                           "flavorRef": spec.flavor_id, "networks": "none",
                           "metadata": {"vimprof": "1"}}}
        if _mv(self.mv) >= (2, 52):
            body["server"]["tags"] = [TAG]
        rec.request_id = new_request_id()
        rec.t_submit_ns = now_ns()
        resp = self.conn.compute.post("/servers", json=body, microversion=self.mv,
                                      global_request_id=rec.request_id, raise_exc=False)
        rec.t_accepted_ns = now_ns()
        rec.nova_request_id = resp.headers.get("x-openstack-request-id")
        if resp.status_code != 202:
            raise RuntimeError(f"POST /servers: HTTP {resp.status_code}: {_body(resp)}")
        rec.server_id = resp.json()["server"]["id"]
        deadline = time.monotonic() + spec.timeout_s
        last: tuple[str, str | None] | None = None
        while True:
            r = self.conn.compute.get(f"/servers/{rec.server_id}", microversion=self.mv,
                                      global_request_id=rec.request_id, raise_exc=False)
            t = now_ns()
            rec.polls += 1
            if r.status_code != 200:
                raise RuntimeError(f"GET /servers/{rec.server_id}: HTTP {r.status_code}: "
                                   f"{_body(r)}")
            srv = r.json()["server"]
            state = (srv.get("status"), srv.get("OS-EXT-STS:task_state"))
            if state != last:
                rec.states.append({"t_ns": t, "status": state[0], "task_state": state[1]})
                last = state
            rec.status = srv.get("status")
            if rec.status == "ACTIVE":
                rec.t_active_ns = t
                rec.host = srv.get("OS-EXT-SRV-ATTR:host")
                return
            if rec.status == "ERROR":
                fault = srv.get("fault") or {}
                rec.fault = fault.get("message") or "no fault message"
                raise RuntimeError(f"server went to ERROR: {rec.fault}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ACTIVE within {spec.timeout_s:.0f} s "
                                   f"(status {rec.status}, task_state {state[1]})")
            time.sleep(spec.poll_s)

    def _delete(self, rec: NovaRunRecord, spec: ServerSpec) -> None:
        """DELETE and poll to 404; a failed DELETE or a server that stays is retried
        DELETE_ATTEMPTS times, then reported in rec.error."""
        rec.delete_request_id = rec.delete_request_id or new_request_id()
        problem = ""
        for attempt in range(DELETE_ATTEMPTS):
            rec.delete_attempts = attempt + 1
            t0 = now_ns()
            r = self.conn.compute.delete(f"/servers/{rec.server_id}", microversion=self.mv,
                                         global_request_id=rec.delete_request_id,
                                         raise_exc=False)
            if attempt == 0 or rec.t_delete_ns is None:
                rec.t_delete_ns, rec.t_deleted_ns = t0, now_ns()
            if r.status_code == 404:
                rec.t_gone_ns = rec.t_gone_ns or now_ns()
                return
            if r.status_code not in (202, 204):
                problem = f"DELETE: HTTP {r.status_code}: {_body(r)}"
                time.sleep(1.0 * (attempt + 1))
                continue
            deadline = time.monotonic() + spec.timeout_s
            server_errors = 0
            while time.monotonic() < deadline:
                g = self.conn.compute.get(f"/servers/{rec.server_id}", microversion=self.mv,
                                          global_request_id=rec.delete_request_id,
                                          raise_exc=False)
                if g.status_code == 404:
                    rec.t_gone_ns = now_ns()
                    return
                if g.status_code >= 500:
                    server_errors += 1
                    if server_errors >= 3:
                        problem = f"GET after DELETE: HTTP {g.status_code}: {_body(g)}"
                        break
                if g.status_code == 200 and g.json()["server"].get("status") == "ERROR":
                    fault = (g.json()["server"].get("fault") or {}).get("message", "")
                    problem = f"delete left the server in ERROR: {fault}"
                    break
                time.sleep(spec.poll_s)
            else:
                problem = f"server still present {spec.timeout_s:.0f} s after DELETE"
        rec.error = rec.error or f"delete failed after {DELETE_ATTEMPTS} attempts: {problem}"

    def _find_by_name(self, rec: NovaRunRecord) -> None:
        """The server an interrupted POST may have created (by its unique name)."""
        r = self.conn.compute.get(f"/servers?name=^{rec.name}$", microversion=self.mv,
                                  raise_exc=False)
        if r.status_code == 200:
            for s in r.json().get("servers", []):
                rec.server_id = s["id"]

    # -- instance actions --------------------------------------------------------------------

    def instance_actions(self, server_id: str) -> list[dict[str, Any]]:
        """vim-events records of the server's instance actions and their events.

        One record per action ({"kind": "action", "name": "create", "t_ns": start}) and per
        event ({"kind": "event", "name": "compute__do_build_and_run_instance", "t_ns": start,
        "end_ns": finish, "result"}); times have second resolution on MariaDB.
        """
        base = f"/servers/{server_id}/os-instance-actions"
        r = self.conn.compute.get(base, microversion=ACTIONS_MICROVERSION, raise_exc=False)
        if r.status_code != 200:
            raise RuntimeError(f"GET {base}: HTTP {r.status_code}: {_body(r)}")
        out: list[dict[str, Any]] = []
        for action in r.json().get("instanceActions", []):
            req = action["request_id"]
            d = self.conn.compute.get(f"{base}/{req}", microversion=ACTIONS_MICROVERSION,
                                      raise_exc=False)
            detail = d.json().get("instanceAction", action) if d.status_code == 200 else action
            common = {"source": "vim", "subject": server_id, "action": detail.get("action"),
                      "request_id": req}
            out.append({**common, "kind": "action", "name": detail.get("action"),
                        "t_ns": iso_to_ns(detail.get("start_time")),
                        "message": detail.get("message")})
            for ev in detail.get("events") or []:
                out.append({**common, "kind": "event", "name": ev.get("event"),
                            "t_ns": iso_to_ns(ev.get("start_time")),
                            "end_ns": iso_to_ns(ev.get("finish_time")),
                            "result": ev.get("result"), "host": ev.get("host")})
        out.sort(key=lambda e: e["t_ns"] or 0)
        return out

    # -- clean-up ---------------------------------------------------------------------------

    def leftovers(self, prefix: str = SERVER_PREFIX) -> list[str]:
        """Ids of servers earlier campaigns left (interrupted, killed, host rebooted): name
        prefix `prefix` and vimprof's tag (or, below microversion 2.52, its metadata key).
        Servers without them are never touched.

        Raises VimprofError when the servers cannot be listed.
        """
        query = f"/servers/detail?name=^{prefix}"
        if _mv(self.mv) >= (2, 26):  # tag filter on the list (Nova API microversion 2.26)
            query += f"&tags={TAG}"
        r = self.conn.compute.get(query, microversion=self.mv, raise_exc=False)
        if r.status_code != 200:
            raise VimprofError(f"cannot list servers to find leftovers: HTTP {r.status_code}: "
                               f"{_body(r)}")
        return [s["id"] for s in r.json().get("servers", [])
                if TAG in (s.get("tags") or []) or (s.get("metadata") or {}).get("vimprof")]

    def purge(self, server_id: str, timeout_s: float = 60.0) -> bool:
        """Delete one server and wait for its 404; True when it is gone."""
        rec = NovaRunRecord(run=-1, name="", server_id=server_id)
        self._delete(rec, ServerSpec(image_id="", flavor_id="", poll_s=0.2,
                                     timeout_s=timeout_s))
        return rec.t_gone_ns is not None


def _mv(v: str) -> tuple[int, int]:
    major, _, minor = v.partition(".")
    return int(major), int(minor or 0)


def _body(resp: Any) -> str:
    """A short error text from a Nova error body ({"badRequest": {"message": ...}})."""
    try:
        data = resp.json()
        for v in data.values():
            if isinstance(v, dict) and "message" in v:
                return str(v["message"])[:300]
    except ValueError:
        pass
    return resp.text.strip()[:300]


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:400] if not isinstance(exc, RuntimeError) \
        else str(exc)[:400]
