"""Rally scenario plugin: boot and delete a diskless micro-VNF on Nova, polled at a fine interval.

Loaded by Rally's own venv (`rally --plugin-paths vimprof/rally/plugin.py task start ...`, see
vimprof.rally.task): it imports only Rally, rally-openstack and the standard library, never
vimprof, so Rally's pins and vimprof's dependencies stay apart.

Scenario `VimprofNova.boot_and_delete_microvnf` (args: image, flavor, poll_interval s,
timeout s, microversion, tag). One iteration, as vimprof's Nova pusher (vimprof/pushers/nova.py):

    POST /servers (networks "none", microversion >= 2.37)  -> 202
    GET /servers/{id} every poll_interval (default 0.05 s)  -> first ACTIVE (ERROR: fault raised)
    DELETE /servers/{id}                                    -> 204
    GET /servers/{id} every poll_interval                   -> first 404

Every request carries an X-OpenStack-Request-ID (keystoneauth's global_request_id): one
`req-<uuid>` for the create and its polls, another for the delete and its polls, so a capture
taken meanwhile correlates with vimprof's analyzer. Rally atomic actions (epoch seconds
started_at / finished_at in the JSON report), named after vimprof's Nova phases
(vimprof/phases.py NOVA, the analyzer's client-side definitions):

    vimprof.total          POST sent -> first poll answering ACTIVE   (phase "total")
      vimprof.api          POST sent -> 202 received                  (phase "api")
      vimprof.wait_active  202 received -> first ACTIVE               (phase "wait_active")
    vimprof.delete         DELETE sent -> first poll answering 404    (phase "delete")
      vimprof.delete_api   DELETE sent -> 204 received                (phase "delete_api")
      vimprof.wait_gone    204 received -> first 404                  (phase "wait_gone")

The iteration's facts (server id, request ids, Nova's own request id of the POST, status
transitions with epoch-ns instants, fault) go to a complete "Table" output titled
"vimprof" (rows [key, JSON value]) that vimprof.rally.importer reads.

Sources: rally_openstack/task/scenarios/nova/servers.py (decorators), rally/task/atomic.py,
keystoneauth1/session.py (global_request_id), nova/api/openstack/compute/servers.py.
"""

import json
import time
import uuid

from rally import exceptions as rally_exceptions
from rally.task import atomic, types, validation
from rally_openstack.common import consts
from rally_openstack.task import scenario

SCENARIO = "VimprofNova.boot_and_delete_microvnf"
OUTPUT_TITLE = "vimprof"
MIN_MICROVERSION = (2, 37)  # networks "none"


def _mv(text):
    major, minor = str(text).split(".")
    return int(major), int(minor)


class ServerFault(rally_exceptions.RallyException):
    msg_fmt = "%(message)s"


@types.convert(image={"type": "glance_image"}, flavor={"type": "nova_flavor"})
@validation.add("required_services", services=[consts.Service.NOVA])
@validation.add("required_platform", platform="openstack", users=True)
@scenario.configure(context={"cleanup@openstack": ["nova"]}, name=SCENARIO,
                    platform="openstack")
class BootAndDeleteMicroVNF(scenario.OpenStackScenario):
    """Boot a diskless micro-VNF with networks "none", poll until ACTIVE, delete, poll until 404."""

    def run(self, image, flavor, poll_interval=0.05, timeout=120.0, microversion="2.52",
            tag="vimprof"):
        """One boot/delete cycle.

        :param image: Glance image (id after Rally's glance_image conversion)
        :param flavor: Nova flavor (id after nova_flavor conversion)
        :param poll_interval: seconds between GET /servers/{id} polls (default 0.05)
        :param timeout: seconds to wait for ACTIVE and for the 404 each
        :param microversion: compute API microversion, >= 2.37 (tags in the body need 2.52)
        :param tag: server tag (microversion >= 2.52 only), so leftovers can be found
        """
        if _mv(microversion) < MIN_MICROVERSION:
            raise rally_exceptions.InvalidArgumentsException(
                f"microversion {microversion} < 2.37: networks 'none' needs 2.37")
        nova = self.clients("nova", version=str(microversion)).client
        facts = {"microversion": str(microversion), "poll_interval_s": poll_interval,
                 "states": [], "polls": 0}
        try:
            self._boot_and_delete(nova, image, flavor, poll_interval, timeout, microversion,
                                  tag, facts)
        finally:
            self.add_output(complete={
                "title": OUTPUT_TITLE,
                "description": "vimprof facts of this iteration (JSON values)",
                "chart_plugin": "Table",
                "data": {"cols": ["key", "value"],
                         "rows": [[k, json.dumps(v)] for k, v in sorted(facts.items())]}})

    def _call(self, nova, method, url, rid, facts, **kw):
        resp, body = nova.request(url, method, global_request_id=rid, raise_exc=False, **kw)
        return resp, body

    def _boot_and_delete(self, nova, image, flavor, poll, timeout, microversion, tag, facts):
        name = self.generate_random_name()
        body = {"server": {"name": name, "imageRef": image, "flavorRef": flavor,
                           "networks": "none"}}
        if _mv(microversion) >= (2, 52) and tag:
            body["server"]["tags"] = [tag]
        rid = f"req-{uuid.uuid4()}"
        facts.update(name=name, request_id=rid)
        try:
            with atomic.ActionTimer(self, "vimprof.total"):
                with atomic.ActionTimer(self, "vimprof.api"):
                    facts["t_submit_ns"] = time.time_ns()
                    resp, rbody = self._call(nova, "POST", "/servers", rid, facts, json=body)
                    facts["t_accepted_ns"] = time.time_ns()
                if resp.status_code != 202:
                    raise ServerFault(message=f"POST /servers: HTTP {resp.status_code} "
                                              f"{resp.text[:300]}")
                facts["server_id"] = rbody["server"]["id"]
                facts["nova_request_id"] = resp.headers.get("x-openstack-request-id")
                with atomic.ActionTimer(self, "vimprof.wait_active"):
                    self._wait_active(nova, facts["server_id"], rid, poll, timeout, facts)
        except Exception:
            # ERROR or timeout: delete the server (untimed: not a delete-path sample), re-raise
            if facts.get("server_id"):
                self._delete(nova, facts["server_id"], poll, timeout, facts, timed=False)
            raise
        self._delete(nova, facts["server_id"], poll, timeout, facts, timed=True)

    def _wait_active(self, nova, sid, rid, poll, timeout, facts):
        deadline = time.monotonic() + timeout
        last = None
        while True:
            resp, body = self._call(nova, "GET", f"/servers/{sid}", rid, facts)
            t = time.time_ns()
            facts["polls"] += 1
            if resp.status_code == 200:
                srv = body["server"]
                state = (srv.get("status"), srv.get("OS-EXT-STS:task_state"))
                if state != last:
                    facts["states"].append({"t_ns": t, "status": state[0],
                                            "task_state": state[1]})
                    last = state
                if state[0] == "ACTIVE":
                    facts["t_active_ns"] = t
                    facts["status"] = "ACTIVE"
                    return
                if state[0] == "ERROR":
                    fault = (srv.get("fault") or {}).get("message", "no fault message")
                    facts["status"] = "ERROR"
                    facts["fault"] = fault
                    raise ServerFault(message=f"server {sid} ended in ERROR: {fault}")
            elif resp.status_code != 404:  # 404 right after the 202 is possible, retry
                raise ServerFault(message=f"GET /servers/{sid}: HTTP {resp.status_code}")
            if time.monotonic() > deadline:
                raise rally_exceptions.TimeoutException(
                    desired_status="ACTIVE", resource_name=sid, resource_type="server",
                    resource_id=sid, resource_status=str(last), timeout=timeout)
            time.sleep(poll)

    def _delete(self, nova, sid, poll, timeout, facts, timed):
        rid = f"req-{uuid.uuid4()}"
        facts["delete_request_id"] = rid
        if not timed:
            self._delete_steps(nova, sid, rid, poll, timeout, facts, timed)
            return
        with atomic.ActionTimer(self, "vimprof.delete"):
            self._delete_steps(nova, sid, rid, poll, timeout, facts, timed)

    def _delete_steps(self, nova, sid, rid, poll, timeout, facts, timed):
        def step(name):
            return atomic.ActionTimer(self, name) if timed else _Null()

        with step("vimprof.delete_api"):
            facts["t_delete_ns"] = time.time_ns()
            for _attempt in range(3):
                resp, _ = self._call(nova, "DELETE", f"/servers/{sid}", rid, facts)
                if resp.status_code in (204, 404):
                    break
                time.sleep(poll)
            else:
                raise ServerFault(message=f"DELETE /servers/{sid}: HTTP {resp.status_code}")
            facts["t_deleted_ns"] = time.time_ns()
        deadline = time.monotonic() + timeout
        with step("vimprof.wait_gone"):
            while True:
                resp, _ = self._call(nova, "GET", f"/servers/{sid}", rid, facts)
                if resp.status_code == 404:
                    facts["t_gone_ns"] = time.time_ns()
                    return
                if time.monotonic() > deadline:
                    raise rally_exceptions.TimeoutException(
                        desired_status="deleted", resource_name=sid, resource_type="server",
                        resource_id=sid, resource_status="exists", timeout=timeout)
                time.sleep(poll)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
