"""A Nomad campaign: N sequential instantiations, recorded into a run directory.

The flow of ARCHITECTURE.md: the pusher fires requests (requests.jsonl), the capture records the
traffic at the VIM core host (capture.pcap), the VIM's own events are kept (vim-events.jsonl),
and the analyzer turns it all into timelines.jsonl at the end.

Ctrl-C, SIGTERM or SIGHUP stops the campaign (vimprof.campaigns.engine): the in-flight job is
purged, the capture is closed, the manifest says the campaign was interrupted and by which
signal, and what was recorded so far stays readable.
"""

from __future__ import annotations

import platform
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from vimprof import rundir
from vimprof.campaigns import arrivals, engine
from vimprof.capture import Capture
from vimprof.drivers.hooks import HooksTail, floor_probe
from vimprof.errors import VimprofError
from vimprof.pushers.nomad import JOB_PREFIX, GuestSpec, NomadPusher
from vimprof.pushers.nomad_access import WILDCARD_DC_VERSION, ClusterAccess, Preflight, preflight
from vimprof.pushers.nomad_events import EventStream
from vimprof.pushers.nomad_jobspec import UserJob
from vimprof.rundir import RunDir


@dataclass(frozen=True)
class Target:
    """Where the campaign sends requests and where it captures."""

    nomad_addr: str
    kernel: str
    accelerator: str
    capture_iface: str | None  # None: no capture
    capture_netns: str | None
    capture_filter: str
    lab: bool  # the embedded lab (vimprof.lab.nomad)
    nomad_variant: str = "stock"  # lab only: "tuned" is the reactive Nomad build
    driver_variant: str | None = None  # lab only: the xen plugin's variant, None: not installed
    hooks_file: str | None = None  # where the xen plugin writes its hooks (lab only)
    artifact_url: str | None = None  # base URL the stock driver downloads the kernel from
    backend: str = "qemu"  # the xen plugin's backend: "xl" is Nomad on Xen (lab.nomad_xen)
    ready_line: str | None = "vimprof-testvnf: ready"  # xen: None, spawn ends at the domain
    xenstored_socket: str | None = None  # xl: the Xen lab's xenstored (DomainWatcher)
    access: ClusterAccess | None = None  # a user's cluster: ACL token, TLS (not the lab)
    job: UserJob | None = None  # the user's own jobspec instead of the built-in micro-VNF
    ports: dict[str, list[int]] | None = None  # the cluster's own HTTP/RPC ports, if not default


@dataclass(frozen=True)
class CampaignSpec:
    """What to run. `driver` is a pushers.nomad.DRIVERS name; `warmup_runs` first runs are
    recorded but declared warm-up in the manifest (reports exclude them and say so); `floor`
    adds a direct QEMU boot after each run (the hypervisor's own spawn time, hooks.jsonl)."""

    label: str
    runs: int
    memory_mb: int = 128
    timeout_s: float = 60.0
    driver: str = "qemu"
    warmup_runs: int = 0
    floor: bool = False
    arrival: str = "sequential"  # vimprof.campaigns.arrivals spec: closed:C, poisson:R ...
    max_in_flight: int = 16  # an open or closed loop stops cleanly beyond this
    duration_s: float | None = None  # an open or closed loop's bound in time
    seed: int | None = None  # Poisson arrivals
    lifetime_s: float = 0.0  # each instance stays this long after it runs, then is deleted
    keep: bool = False  # every instance stays until the campaign ends, then all are deleted


def run_campaign(spec: CampaignSpec, target: Target, run: RunDir, console: Console) -> int:
    """Run the campaign into `run`; returns the number of failed runs.

    Raises VimprofError when the VIM is unreachable before the first request or the capture
    cannot start; KeyboardInterrupt after cleaning up (vimprof.campaigns.engine).
    """
    process = None if spec.arrival == "sequential" else arrivals.parse(spec.arrival,
                                                                       seed=spec.seed)
    if process is not None and (spec.floor or target.backend == "xl"):
        raise VimprofError("the floor probe and the xl backend time one instance at a time: "
                           "use --arrival sequential with them (or --no-floor)")
    pusher = NomadPusher(target.nomad_addr, timeout_s=spec.timeout_s, access=target.access)
    pre = None
    if target.lab:
        version = pusher.version()  # also: unreachable -> clear error before any request
    else:  # a user's cluster: reachable, TLS, token and capabilities, before any change
        probe = target.job or _guest(spec, target, ("*",))
        pre = preflight(pusher.access, probe.job(f"{JOB_PREFIX}preflight"))
        version = pre.version or "unknown (the token may not read /v1/agent/self)"
        _warn_expiry(console, pre, spec)
    purged = engine.purge_leftovers(console, pusher.leftovers(), pusher.purge, "job")
    if purged:
        pusher.wait_no_allocs_running()

    campaign_id = secrets.token_hex(3)
    xen = spec.driver.startswith("xen-")
    if xen and target.lab and target.driver_variant != spec.driver.removeprefix("xen-"):
        raise VimprofError(f"the lab's driver plugin runs {target.driver_variant or 'nowhere'}, "
                           f"not {spec.driver}: bring the lab up with that variant")
    xl = xen and target.backend == "xl"
    if target.backend == "xl" and not xen:
        raise VimprofError("the xl backend is the xen driver plugin's: use --driver xen-stock "
                           "or xen-tuned")
    old_dc = pre is not None and pre.datacenter and (pre.version_tuple() or (99,)) < \
        WILDCARD_DC_VERSION
    guest = target.job or _guest(spec, target, (pre.datacenter,) if old_dc else ("*",))
    hooks = HooksTail(target.hooks_file) if xen and target.hooks_file else None
    events = None
    if not target.lab:  # Nomad's own allocation events: timelines even when the RPC is TLS
        events = EventStream(pusher.access, f"{JOB_PREFIX}{spec.label}-{campaign_id}-").start()
        if events.error:
            console.print(f"[yellow]warning:[/] {events.error}: without the capture's RPC "
                          "phases and Nomad's events, only client-side phases are measured")
    engine.start(
        run,
        label=spec.label,
        campaign={"id": campaign_id, "runs": spec.runs,
                  **engine.campaign_fields(process, spec),
                  "memory_mb": spec.memory_mb, "accelerator": target.accelerator,
                  "timeout_s": spec.timeout_s, "driver": spec.driver,
                  "warmup_runs": spec.warmup_runs, "floor": spec.floor},
        vim={"name": "nomad", "version": version, "addr": target.nomad_addr, "lab": target.lab,
             "variant": target.nomad_variant},
        driver={"name": "qemu" if not xen else "xen", "variant": spec.driver.removeprefix("xen-")
                if xen else "builtin", "backend": target.backend if xen else "qemu"},
        hypervisor={"name": "xen", "lab": "vimprof.lab.xen (Xen 4.17 in QEMU/TCG)",
                    "kernel": target.kernel} if xl else
        {"name": "qemu", "accelerator": target.accelerator, "kernel": target.kernel},
        hosts={"pusher": platform.node(), "capture": {"iface": target.capture_iface,
                                                       "netns": target.capture_netns,
                                                       "filter": target.capture_filter,
                                                       **({"ports": target.ports}
                                                          if target.ports else {})}},
        clock="one machine, one clock: capture, client and VIM times are directly comparable"
        if target.lab else "capture and VIM clocks may differ: check NTP on every host",
        leftovers_purged=purged,
        **({"cluster": {"acl": pre.acl, "token_name": pre.token_name,
                        "tls": pusher.access.addr.startswith("https://"),
                        "event_stream": events.error if events and events.error else "on"}}
           if pre else {}),
        **({"job": {"source": target.job.source, "group": target.job.group}}
           if target.job else {}),
    )

    capture = None
    if target.capture_iface:
        capture = Capture(run.file(rundir.CAPTURE), target.capture_iface,
                          target.capture_filter, netns=target.capture_netns).start()
    xlrun = None
    if xl:  # Nomad on Xen: XenStore watcher, dom0 clock, direct-xl floor, leak check
        from vimprof.campaigns.xl import XLCampaign

        xlrun = XLCampaign(target.xenstored_socket)
    allocs: set[str] = set()
    kept: list[Any] = []  # --keep: RunRecords of jobs left running until the end

    def file_record(rec: Any, out: engine.Outputs) -> dict[str, Any]:
        """One finished run into requests.jsonl, vim-events.jsonl and hooks.jsonl."""
        line = rec.as_json()
        out.requests.write(line)
        for ev in rec.task_events + (events.take() if events else []):
            out.vim_events.write(ev)
        if hooks and rec.alloc_id:
            allocs.add(rec.alloc_id)
            for h in hooks.take(rec.alloc_id):
                out.hooks.write(h)
        return line

    def outcome(rec: Any) -> tuple[bool, str]:
        if rec.t_stop_ns is None and rec.ok:
            return True, f"run {rec.run} running, kept until the end"
        line = rec.as_json()
        return rec.ok, (f"run {rec.run} running after {line['running_ms']:.0f} ms" if rec.ok
                        else f"[red]run {rec.run} failed: {rec.error}")

    def one(i: int, out: engine.Outputs) -> tuple[bool, str]:
        job_id = f"{JOB_PREFIX}{spec.label}-{campaign_id}-{i:04d}"
        if xlrun:
            xlrun.before_run(i)
        rec = pusher.run_once(i, job_id, guest, spec.lifetime_s, spec.keep)
        if rec.t_stop_ns is None and rec.ok:
            kept.append(rec)
        else:
            file_record(rec, out)
        if xlrun:
            for h in xlrun.after_run(i, rec.alloc_id, floor=spec.floor):
                out.hooks.write(h)
        elif spec.floor:
            out.hooks.write(floor_probe(Path(target.kernel), target.accelerator,
                                        spec.memory_mb, i))
        return outcome(rec)

    def finish(out: engine.Outputs) -> None:
        for rec in kept:  # --keep: every instance deleted now, also when interrupted
            file_record(pusher.stop_kept(rec), out)
        if events:  # the last run's terminal status reaches the stream just after the pusher
            time.sleep(1.0)
            events.stop()
            for ev in events.take():
                out.vim_events.write(ev)
        if hooks:  # lines the plugin wrote late, also when interrupted
            for h in hooks.take_all(allocs):
                out.hooks.write(h)
        if xlrun:  # the watcher's last records; no domain left behind
            for h in xlrun.finish():
                out.hooks.write(h)

    if process is None:
        return engine.run_sequential(
            run, console, spec.label, spec.runs, one, capture=capture,
            begin=xlrun.start if xlrun else None, finish=finish,
            what="in-flight job purged",
            end_fields=lambda: {"xen": xlrun.summary()} if xlrun else {})

    local = threading.local()  # one API client per worker thread (requests sessions)

    def fire(i: int, _intended_ns: int) -> dict[str, Any]:
        p = getattr(local, "pusher", None)
        if p is None:
            p = local.pusher = NomadPusher(target.nomad_addr, timeout_s=spec.timeout_s,
                                           access=target.access)
        rec = p.run_once(i, f"{JOB_PREFIX}{spec.label}-{campaign_id}-{i:04d}", guest,
                         spec.lifetime_s, spec.keep)
        return {"_rec": rec}

    def write(line: dict[str, Any], out: engine.Outputs) -> tuple[bool, str]:
        rec = line["_rec"]
        for k in ("t_intended_ns", "t_sent_ns", "send_lag_ms", "in_flight"):  # the engine's
            setattr(rec, k, line.get(k))
        if rec.t_stop_ns is None and rec.ok:
            kept.append(rec)
        else:
            file_record(rec, out)
        return outcome(rec)

    return engine.run_arrivals(
        run, console, spec.label, process, fire, write, capture=capture,
        what="in-flight jobs purged", max_in_flight=spec.max_in_flight, max_runs=spec.runs,
        max_duration_s=spec.duration_s, finish=finish)


def _guest(spec: CampaignSpec, target: Target, datacenters: tuple[str, ...]) -> GuestSpec:
    """The built-in micro-VNF job of this campaign."""
    artifact = f"{target.artifact_url}/{Path(target.kernel).name}" if target.artifact_url else None
    xen = spec.driver.startswith("xen-")
    return GuestSpec(kernel=target.kernel, accelerator=target.accelerator,
                     memory_mb=spec.memory_mb, driver=spec.driver, artifact_url=artifact,
                     backend=target.backend if xen else "qemu", ready_line=target.ready_line,
                     datacenters=datacenters)


def _warn_expiry(console: Console, pre: Preflight, spec: CampaignSpec) -> None:
    """Say so when the token may expire before a campaign of this length ends."""
    if pre.token_expires_ns is None:
        return
    left_s = (pre.token_expires_ns - time.time_ns()) / 1e9
    if left_s < spec.runs * spec.timeout_s:
        console.print(f"[yellow]warning:[/] the token expires in {left_s:.0f} s; a campaign of "
                      f"{spec.runs} run(s) may outlast it (at most {spec.timeout_s:.0f} s each)")


def lab_target(accelerator: str, console: Console, nomad_variant: str = "stock",
               driver: str = "qemu", backend: str = "qemu") -> Target:
    """The embedded Nomad lab as a target, brought up (or restarted with other variants) when
    it does not run the wanted Nomad variant and driver plugin variant. `backend` "xl" (with
    a xen-* driver) is Nomad on Xen: the Nomad lab, the Xen lab and a client in dom0
    (vimprof.lab.nomad_xen.up). Raises VimprofError when a lab cannot come up."""
    from vimprof.lab import nomad as lab

    if backend == "xl":
        if not driver.startswith("xen-"):
            raise VimprofError("--backend xl needs --driver xen-stock or xen-tuned")
        from vimprof.lab import nomad_xen

        console.print(f"bringing Nomad on Xen up (Nomad {nomad_variant}, xen driver "
                      f"{driver.removeprefix('xen-')}, xl backend) ...")
        nx = nomad_xen.up(nomad_variant=nomad_variant, driver_variant=driver.removeprefix("xen-"),
                          accelerator=accelerator)
        return Target(nomad_addr=nx.http_addr, kernel=nx.kernel, accelerator="xen-pv",
                      capture_iface="any", capture_netns=lab.SERVER_NS,
                      capture_filter=lab.CAPTURE_FILTER, lab=True,
                      nomad_variant=nx.nomad_variant, driver_variant=nx.driver_variant,
                      hooks_file=nx.hooks_file, artifact_url=nx.artifact_url, backend="xl",
                      ready_line=None, xenstored_socket=nx.xenstored_socket)
    driver_variant = driver.removeprefix("xen-") if driver.startswith("xen-") else None
    state = lab.current()
    if state is None or state.nomad_variant != nomad_variant or (
        driver_variant and state.driver_variant != driver_variant
    ):
        console.print(f"bringing the Nomad lab up (Nomad {nomad_variant}"
                      + (f", xen driver {driver_variant}" if driver_variant else "") + ") ...")
        keep = state.driver_variant if state else None  # a qemu campaign keeps the plugin's
        state = lab.up(accelerator=accelerator, nomad_variant=nomad_variant,
                       driver_variant=driver_variant or keep or "stock")
        if driver_variant and state.driver_variant is None:
            raise VimprofError("the micro-VNF driver plugin is not built: run scripts/setup")
    # A per-campaign accelerator override does not need a new lab: it is a job setting.
    accel = state.accelerator if accelerator == "auto" else accelerator
    return Target(nomad_addr=state.http_addr, kernel=state.kernel, accelerator=accel,
                  capture_iface=state.capture_iface, capture_netns=state.capture_netns,
                  capture_filter=lab.CAPTURE_FILTER, lab=True,
                  nomad_variant=state.nomad_variant, driver_variant=state.driver_variant,
                  hooks_file=state.hooks_file, artifact_url=state.artifact_url)


def remote_target(access: ClusterAccess, kernel: str | None, accelerator: str,
                  iface: str | None, job: UserJob | None = None,
                  http_ports: tuple[int, ...] = (), rpc_ports: tuple[int, ...] = ()) -> Target:
    """A user's cluster at `access`: the built-in micro-VNF (`kernel`, a path on the clients)
    or the user's own `job`; `http_ports`/`rpc_ports` its own ports when not 4646/4647 (the
    capture filter, and the manifest for the analyzer). Raises VimprofError for a relative
    kernel path or neither."""
    if accelerator == "auto":
        accelerator = "tcg"
    if job is None:
        if not kernel:
            raise VimprofError("--nomad-addr needs --kernel (the micro-VNF kernel on the "
                               "clients) or --job FILE (your own jobspec)")
        if not Path(kernel).is_absolute():
            raise VimprofError("--kernel must be an absolute path on the Nomad client")
    ports = sorted({*(http_ports or (4646,)), *(rpc_ports or (4647,))})
    return Target(nomad_addr=access.addr, kernel=kernel or "", accelerator=accelerator,
                  capture_iface=iface, capture_netns=None,
                  capture_filter=" or ".join(f"tcp port {p}" for p in ports), lab=False,
                  access=access, job=job,
                  ports={"http": list(http_ports), "rpc": list(rpc_ports)}
                  if http_ports or rpc_ports else None)


def prepare(console: Console, *, label: str, runs: int, nomad_addr: str | None = None,
            capture_iface: str | None = None, kernel: str | None = None, accel: str = "auto",
            memory_mb: int = 128, timeout_s: float = 60.0, driver: str = "qemu",
            nomad_variant: str = "stock", backend: str = "qemu", warmup_runs: int = 0,
            floor: bool | None = None, job_file: Path | None = None,
            job_group: str | None = None, token: str | None = None,
            ca_cert: str | None = None, client_cert: str | None = None,
            client_key: str | None = None, tls_server_name: str | None = None,
            http_ports: tuple[int, ...] = (), rpc_ports: tuple[int, ...] = (),
            arrival: str = "sequential", max_in_flight: int = 16,
            duration_s: float | None = None, seed: int | None = None,
            lifetime_s: float = 0.0, keep: bool = False,
            ) -> tuple[CampaignSpec, Target]:
    """What `vimprof capture` (and a campaign file's level) runs against Nomad: the spec and
    the target, the embedded lab (brought up as needed) or the cluster at `nomad_addr` with
    its token, TLS settings and the user's jobspec. Raises VimprofError for options that do
    not go together, before anything runs."""
    if nomad_addr:
        from vimprof.pushers import nomad_jobspec

        if driver != "qemu" or nomad_variant != "stock" or backend != "qemu":
            raise VimprofError("--driver xen-* and --nomad tuned need the embedded lab (the "
                               "plugin's hooks file and the Nomad build are set up by it)")
        access = ClusterAccess.from_env(nomad_addr, token, ca_cert, client_cert, client_key,
                                        tls_server_name)
        if job_group and not job_file:
            raise VimprofError("--job-group goes with --job FILE")
        user_job = nomad_jobspec.load(job_file, access, job_group) if job_file else None
        target = remote_target(access, kernel, accel, capture_iface, user_job, http_ports,
                               rpc_ports)
    else:
        if (capture_iface or kernel or job_file or token or ca_cert or client_cert
                or http_ports or rpc_ports):
            raise VimprofError("--capture-iface, --kernel, --job, --token, the TLS options and "
                               "the port options only apply with --nomad-addr")
        target = lab_target(accel, console, nomad_variant, driver, backend)
    if warmup_runs >= runs:
        raise VimprofError(f"--warmup {warmup_runs} leaves no measured run of {runs}")
    sequential = arrival == "sequential"
    spec = CampaignSpec(label=label, runs=runs, memory_mb=memory_mb, timeout_s=timeout_s,
                        driver=driver, warmup_runs=warmup_runs,
                        floor=(driver != "qemu" and sequential) if floor is None else floor,
                        arrival=arrival, max_in_flight=max_in_flight, duration_s=duration_s,
                        seed=seed, lifetime_s=lifetime_s, keep=keep)
    return spec, target
