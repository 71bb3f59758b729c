"""Nomad workload pusher (python-nomad): boot a micro-VNF, wait until it runs, stop and purge it.

One run = register a one-task job that boots the test micro-VNF with Nomad's built-in qemu
driver (kernel through `args`, `drive_interface = "none"`: no disk attached), wait until the
allocation runs, then deregister with purge and wait until the allocation is terminal (the guest
is gone). Runs are sequential, each cleaned up before the next (Ventre et al. 2016, Sec. V).

Waiting uses Nomad blocking queries (`?index=N&wait=..`, X-Nomad-Index), never sleep-polling.
Job, allocation and task-state semantics: hashicorp/nomad nomad/structs/structs.go.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nomad
import nomad.api.exceptions as nomad_exc
import requests

from vimprof import interrupts
from vimprof.errors import VimprofError
from vimprof.pushers.nomad_access import ClusterAccess
from vimprof.pushers.nomad_jobspec import META_KEY, META_VALUE, UserJob
from vimprof.rundir import now_ns

JOB_PREFIX = "vimprof-"
TERMINAL = {"complete", "failed", "lost"}
BLOCK_WAIT = "5s"


DRIVERS = ("qemu", "xen-stock", "xen-tuned")
BACKENDS = ("qemu", "xl")  # the xen plugin's backends


@dataclass(frozen=True)
class GuestSpec:
    """The micro-VNF each run boots and through which task driver.

    `driver`: "qemu" is Nomad's built-in qemu driver (kernel path on the client, through
    `args`); "xen-stock" and "xen-tuned" are vimprof's micro-VNF driver plugin (driver name
    `xen`, patches/nomad-xen/) with its `backend` ("qemu", or "xl" on a Xen dom0 node: the
    task then gets a constraint on the plugin's `driver.xen.xl` attribute). xen-stock ships
    the kernel through Nomad's `artifact` stanza from `artifact_url` (Ventre et al. 2016,
    Sec. V-B: the stock XenDriver downloads image and configuration); xen-tuned names the
    kernel file, which the plugin finds in its allowlisted image directory. Which variant the
    plugin runs (executor and log collection or direct spawn) is its agent configuration,
    set by the lab.
    """

    kernel: str
    accelerator: str = "tcg"
    memory_mb: int = 128  # the qemu driver refuses less (drivers/qemu/driver.go)
    cpu_mhz: int = 100
    driver: str = "qemu"
    artifact_url: str | None = None  # xen-stock: where the client downloads the kernel
    ready_line: str | None = "vimprof-testvnf: ready"  # xen: spawn ends when the guest says it
    backend: str = "qemu"  # xen: the plugin's backend, "qemu" or "xl" (Nomad on Xen)
    datacenters: tuple[str, ...] = ("*",)  # "*" needs Nomad >= 1.5; older: the agent's own
    group = None  # the measured task group: the job has one

    def job(self, job_id: str) -> dict[str, Any]:
        return job_spec(job_id, self)


@dataclass
class RunRecord:
    """One instantiation request, as written to requests.jsonl (instants in ns since epoch)."""

    run: int
    job_id: str
    ok: bool = False
    error: str | None = None
    alloc_id: str | None = None
    node_id: str | None = None
    eval_id: str | None = None
    t_submit_ns: int | None = None
    t_registered_ns: int | None = None
    t_running_ns: int | None = None
    t_stop_ns: int | None = None
    t_gone_ns: int | None = None
    client_status: str | None = None
    task_events: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("task_events")
        d["vim"] = "nomad"
        for a, b, name in (
            ("t_submit_ns", "t_registered_ns", "register_ms"),
            ("t_submit_ns", "t_running_ns", "running_ms"),
            ("t_stop_ns", "t_gone_ns", "stop_ms"),
        ):
            d[name] = (d[b] - d[a]) / 1e6 if d[a] and d[b] else None
        return d


def _task(guest: GuestSpec) -> dict[str, Any]:
    """The task of the job: driver, its config and, for xen-stock, the artifact."""
    task: dict[str, Any] = {
        "Name": "micro-vnf",
        "Resources": {"CPU": guest.cpu_mhz, "MemoryMB": guest.memory_mb},
        "KillTimeout": 2_000_000_000,
        "LogConfig": {"MaxFiles": 1, "MaxFileSizeMB": 1},
    }
    if guest.driver == "qemu":
        task["Driver"] = "qemu"
        task["Config"] = {
            "image_path": guest.kernel,
            "drive_interface": "none",
            "accelerator": guest.accelerator,
            "args": ["-kernel", guest.kernel, "-no-reboot"],
        }
        return task
    if guest.driver not in DRIVERS:
        raise ValueError(f"driver must be one of {DRIVERS}, not {guest.driver!r}")
    name = guest.kernel.rsplit("/", 1)[-1]
    if guest.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {guest.backend!r}")
    config: dict[str, Any] = {"backend": guest.backend, "kernel": name}
    if guest.ready_line:
        config["ready_line"] = guest.ready_line
    task["Driver"] = "xen"
    task["Config"] = config
    # Pin the task to a node where the plugin found the backend (fingerprint attributes
    # driver.xen.xl / driver.xen.qemu): with Nomad on Xen up, both kinds of client exist.
    task["Constraints"] = [{"LTarget": f"${{attr.driver.xen.{guest.backend}}}", "Operand": "=",
                            "RTarget": "true"}]
    if guest.driver == "xen-stock":
        if not guest.artifact_url:
            raise ValueError("xen-stock needs artifact_url: the kernel comes as an artifact")
        task["Artifacts"] = [{"GetterSource": guest.artifact_url, "RelativeDest": "local/"}]
    return task


def job_spec(job_id: str, guest: GuestSpec) -> dict[str, Any]:
    """The Nomad API job (JSON, Go field names) booting one diskless micro-VNF guest.

    Raises ValueError for an unknown driver or xen-stock without an artifact URL.
    """
    return {
        "ID": job_id,
        "Name": job_id,
        "Type": "service",
        "Datacenters": list(guest.datacenters),
        "Meta": {META_KEY: META_VALUE},
        "TaskGroups": [
            {
                "Name": "vnf",
                "Count": 1,
                # A failed boot is a failed run: no restarts, no rescheduling.
                "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
                "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
                "EphemeralDisk": {"SizeMB": 10},
                "Tasks": [_task(guest)],
            }
        ],
    }


class NomadPusher:
    """Drives one Nomad cluster through its HTTP API (python-nomad)."""

    def __init__(self, addr: str, timeout_s: float = 60.0, token: str | None = None,
                 access: ClusterAccess | None = None):
        """`access` (address, ACL token, TLS) wins over `addr` and `token`."""
        self.access = access or ClusterAccess(addr=addr, token=token)
        self.addr = self.access.addr
        self.timeout_s = timeout_s
        self.api = nomad.Nomad(**self.access.python_nomad(timeout=10))

    # -- cluster facts -----------------------------------------------------------------------

    def check_reachable(self) -> dict[str, Any]:
        """Agent self-info; raises VimprofError (before the first request) when unreachable."""
        try:
            return self.api.agent.get_agent()
        except (nomad_exc.BaseNomadException, requests.RequestException) as exc:
            raise VimprofError(
                f"Nomad is unreachable at {self.addr} ({_reason(exc)}): start it "
                "(`vimprof lab up nomad`) or pass the right --nomad-addr"
            ) from None

    def version(self) -> str:
        cfg = self.check_reachable().get("config", {})
        return str(cfg.get("Version", {}).get("Version", "unknown"))

    # -- blocking queries ----------------------------------------------------------------------

    def _blocking(self, endpoint: Any, *path: str, index: int) -> tuple[Any, int]:
        """Blocking query GET /v1/<endpoint>/<path>?index=N&wait=.. through python-nomad.

        Returns (body, X-Nomad-Index); body is None for 404 (the object is gone).
        """
        try:
            resp = endpoint.request(*path, method="get", timeout=30,
                                    params={"index": index, "wait": BLOCK_WAIT})
        except nomad_exc.URLNotFoundNomadException:
            return None, index
        return resp.json(), int(resp.headers.get("X-Nomad-Index", index))

    def _wait(self, endpoint: Any, *path: str, done: Callable[[Any], bool], what: str) -> Any:
        deadline = time.monotonic() + self.timeout_s
        index = 0
        while True:
            body, index = self._blocking(endpoint, *path, index=index)
            if done(body):
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not seen within {self.timeout_s:.0f} s")

    # -- one run -----------------------------------------------------------------------------

    def run_once(self, run: int, job_id: str, guest: GuestSpec | UserJob,
                 lifetime_s: float = 0.0, keep: bool = False) -> RunRecord:
        """Register, wait running, (stay `lifetime_s` s,) stop, wait gone, purge; with `keep`
        return once running, the job left for `stop_kept` (its record's t_stop_ns is None).

        Never raises for a failed run: the error is recorded in the returned RunRecord.
        A KeyboardInterrupt propagates once the in-flight job is stopped and purged.
        """
        rec = RunRecord(run=run, job_id=job_id)
        interrupted = False
        try:
            self._instantiate(rec, guest, lifetime_s, keep)
        except KeyboardInterrupt:
            interrupted = True
        except Exception as exc:  # noqa: BLE001 - a failed run is data, the campaign goes on
            rec.error = _reason(exc)
        kept = keep and rec.error is None and not interrupted
        if rec.t_stop_ns is None and not kept:  # failed or interrupted: never leak a guest
            with interrupts.cleaning(f"stopping and purging job {rec.job_id}"):
                self._terminate(rec)
        if interrupted:
            raise KeyboardInterrupt
        rec.ok = rec.error is None
        return rec

    def stop_kept(self, rec: RunRecord) -> RunRecord:
        """Stop, wait gone and purge a job `run_once(keep=True)` left running."""
        with interrupts.cleaning(f"stopping and purging job {rec.job_id}"):
            self._terminate(rec)
        rec.ok = rec.error is None
        return rec

    def _instantiate(self, rec: RunRecord, guest: GuestSpec | UserJob, lifetime_s: float = 0.0,
                     keep: bool = False) -> None:
        job = guest.job(rec.job_id)
        rec.t_submit_ns = now_ns()
        reply = self.api.job.register_job(rec.job_id, {"Job": job})
        rec.t_registered_ns = now_ns()
        rec.eval_id = reply.get("EvalID")

        def running(allocs: Any) -> bool:
            for a in allocs or []:
                if guest.group is not None and a.get("TaskGroup") != guest.group:
                    continue  # another group of the user's job: not the measured instance
                if a["ClientStatus"] == "running":
                    rec.t_running_ns = rec.t_running_ns or now_ns()
                    rec.alloc_id, rec.node_id = a["ID"], a["NodeID"]
                    return True
                if a["ClientStatus"] in TERMINAL:
                    rec.alloc_id = a["ID"]
                    raise RuntimeError(f"allocation {a['ID'][:8]} {a['ClientStatus']}: "
                                       + _task_failure(a))
            return False

        self._wait(self.api.job, rec.job_id, "allocations", done=running, what="allocation running")
        if keep:
            return
        if lifetime_s > 0:
            time.sleep(lifetime_s)
        self._terminate(rec)

    def _terminate(self, rec: RunRecord) -> None:
        """Stop the job, wait until its allocation is terminal (the guest is gone), then purge.

        Purging first would make the allocation vanish from the API (404) before the client
        has killed the guest, so the stop would go unobserved.
        """
        rec.t_stop_ns = now_ns()
        try:
            self.api.job.deregister_job(rec.job_id, purge=False)
            if rec.alloc_id is not None:

                def gone(alloc: Any) -> bool:
                    if alloc is None or alloc["ClientStatus"] in TERMINAL:
                        rec.client_status = alloc and alloc["ClientStatus"]
                        rec.task_events = _task_events(alloc)
                        return True
                    return False

                self._wait(self.api.allocation, rec.alloc_id, done=gone,
                           what="allocation stopped")
            rec.t_gone_ns = now_ns()
        except nomad_exc.URLNotFoundNomadException:
            rec.t_gone_ns = now_ns()
        except Exception as exc:  # noqa: BLE001 - recorded; the campaign goes on
            rec.error = rec.error or f"stop: {_reason(exc)}"
        finally:
            self.purge(rec.job_id)

    # -- clean-up ---------------------------------------------------------------------------

    def purge(self, job_id: str) -> None:
        """Stop and purge one job, ignoring a job that is already gone."""
        with contextlib.suppress(nomad_exc.BaseNomadException, requests.RequestException):
            self.api.job.deregister_job(job_id, purge=True)

    def leftovers(self, prefix: str = JOB_PREFIX) -> list[str]:
        """IDs of jobs earlier campaigns left behind (interrupted, killed, host rebooted): name
        prefix `prefix` and vimprof's meta tag. The job list's stubs carry Meta only when asked
        with `meta=true` (v1.6 on: command/agent/job_endpoint.go jobListRequest, JobStubFields);
        where a stub has none (an older cluster ignores the parameter), the tag is read from
        the job itself. Jobs without the tag are never touched.

        Raises VimprofError when the cluster cannot be listed (ACL, unreachable).
        """
        try:
            stubs = self.api.jobs.get_jobs(prefix=prefix, meta=True)
        except (nomad_exc.BaseNomadException, requests.RequestException) as exc:
            raise VimprofError(f"cannot list jobs at {self.addr} to find leftovers "
                               f"({_reason(exc)})") from None
        found = []
        for stub in stubs:
            meta = stub.get("Meta")
            if meta is None:
                try:
                    meta = self.api.job.get_job(stub["ID"]).get("Meta")
                except nomad_exc.URLNotFoundNomadException:
                    continue  # purged meanwhile
            if (meta or {}).get(META_KEY) == META_VALUE:
                found.append(stub["ID"])
        return found

    def wait_no_allocs_running(self, timeout_s: float = 30.0) -> bool:
        """True once no allocation of a vimprof job is still running on any node."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            allocs = self.api.allocations.get_allocations(prefix="")
            live = [a for a in allocs if a["JobID"].startswith(JOB_PREFIX)
                    and a["ClientStatus"] not in TERMINAL]
            if not live:
                return True
            time.sleep(0.2)
        return False


def _task_events(alloc: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Task events of an allocation as vim-events records (t_ns from TaskEvent.Time, UnixNano)."""
    out: list[dict[str, Any]] = []
    if not alloc:
        return out
    for task, state in (alloc.get("TaskStates") or {}).items():
        for ev in state.get("Events") or []:
            out.append({
                "t_ns": int(ev["Time"]),
                "source": "vim",
                "subject": alloc["ID"],
                "task": task,
                "name": ev["Type"],
                "message": ev.get("DisplayMessage", ""),
            })
    return out


def _task_failure(alloc: dict[str, Any]) -> str:
    msgs = [
        ev.get("DisplayMessage", "")
        for state in (alloc.get("TaskStates") or {}).values()
        for ev in state.get("Events") or []
        if ev.get("FailsTask") or "Failure" in ev.get("Type", "")
    ]
    return "; ".join(m for m in msgs if m) or "no task failure event"


def _reason(exc: BaseException) -> str:
    """One line describing a python-nomad / requests error."""
    if isinstance(exc, nomad_exc.BaseNomadException):
        resp = exc.nomad_resp
        if isinstance(resp, requests.Response):
            return f"HTTP {resp.status_code}: {resp.text.strip()[:200]}"
        return str(resp)[:200]
    return f"{type(exc).__name__}: {exc}"[:300]
