"""A Nova capture campaign: N sequential server boots, recorded into a run directory.

On the engine of vimprof.campaigns.engine, like vimprof.campaigns.nomad: the pusher
(vimprof.pushers.nova) fires the requests (requests.jsonl, one line per server), tcpdump
records the OpenStack traffic in the lab's namespace (capture.pcap: nova-api 8774, keystone
5000, glance 9292, placement 8778, neutron 9696, AMQP 5672; MariaDB is left out), Nova's
instance actions go to vim-events.jsonl, and the hook lines vimprof's Nova driver appends to
its hooks file are collected for the campaign's own servers into hooks.jsonl. manifest.json
records versions, the variant and the capture point.

Variants: "stock" boots the raw root image with kernel_id (Nova's own spawn path, timed by the
driver's hooks); "tuned" boots the diskless image (vimprof_diskless=true) through vimprof's
driver in tuned mode. Both need the lab's compute_driver vimprof_diskless for hooks.

Ctrl-C, SIGTERM or SIGHUP: the in-flight server is deleted, the capture closed, the manifest
says interrupted and by which signal.
A server ending in ERROR is recorded with Nova's fault message and the campaign goes on.
"""

from __future__ import annotations

import platform
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from vimprof import rundir
from vimprof.campaigns import arrivals, engine
from vimprof.capture import Capture
from vimprof.drivers.hooks import HooksTail
from vimprof.errors import VimprofError
from vimprof.pushers.nova import SERVER_PREFIX, NovaPusher, ServerSpec
from vimprof.rundir import RunDir

NOVA_PORTS = (8774, 5000, 9292, 8778, 9696, 5672)
CAPTURE_FILTER = " or ".join(f"tcp port {p}" for p in NOVA_PORTS)
VARIANTS = ("stock", "tuned")


@dataclass(frozen=True)
class NovaTarget:
    """Where the campaign sends requests and captures.

    cloud: openstack.connect() keyword arguments (the lab's admin) or {"cloud": NAME} for a
    clouds.yaml entry. hooks_file: the driver's hooks file on this machine (None: no hooks).
    """

    cloud: dict[str, Any]
    image_id: str
    flavor_id: str
    variant: str
    capture_iface: str | None
    capture_netns: str | None
    capture_filter: str = CAPTURE_FILTER
    hooks_file: str | None = None
    lab: bool = False
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NovaCampaignSpec:
    """What to run: `runs` boots polled every `poll_ms` ms, each failing after `timeout_s`;
    the first `warmup_runs` are recorded but left out of reports (the first boot after
    bring-up fills Nova's image cache)."""

    label: str
    runs: int
    poll_ms: float = 50.0
    timeout_s: float = 120.0
    warmup_runs: int = 0
    arrival: str = "sequential"  # vimprof.campaigns.arrivals spec: closed:C, poisson:R ...
    max_in_flight: int = 16  # an open or closed loop stops cleanly beyond this
    duration_s: float | None = None  # an open or closed loop's bound in time
    seed: int | None = None  # Poisson arrivals
    lifetime_s: float = 0.0  # each server stays this long after ACTIVE, then is deleted
    keep: bool = False  # every server stays until the campaign ends, then all are deleted


def nova_hooks(path: str | None) -> HooksTail:
    """The reader of the Nova driver's hooks file; records get "instance" (= instance_uuid)
    for the analyzer (vimprof/analyzer/enrich.py)."""
    return HooksTail(path, key="instance_uuid", alias="instance")


def connect(cloud: dict[str, Any]):
    """An openstack.connection.Connection; VimprofError when openstacksdk is missing."""
    try:
        import openstack
    except ImportError:
        raise VimprofError("openstacksdk is missing: pip install -e '.[nova]'") from None
    try:
        return openstack.connect(**cloud)
    except Exception as exc:  # noqa: BLE001 - openstack.config errors: bad cloud name ...
        raise VimprofError(f"cannot configure the cloud ({type(exc).__name__}: {exc}); check "
                           "--os-cloud and clouds.yaml") from None


def run_campaign(spec: NovaCampaignSpec, target: NovaTarget, run: RunDir,
                 console: Console) -> int:
    """Run the campaign into `run`; returns the number of failed runs.

    Raises VimprofError when the cloud is unreachable, refuses the credentials or lacks the
    image/flavor (before the first request), or the capture cannot start; KeyboardInterrupt
    after deleting the in-flight server.
    """
    process = None if spec.arrival == "sequential" else arrivals.parse(spec.arrival,
                                                                       seed=spec.seed)
    conn = connect(target.cloud)
    pusher = NovaPusher(conn)
    server = ServerSpec(image_id=target.image_id, flavor_id=target.flavor_id,
                        poll_s=spec.poll_ms / 1000.0, timeout_s=spec.timeout_s)
    facts = pusher.check(server)
    purged = engine.purge_leftovers(console, pusher.leftovers(), pusher.purge, "server")

    campaign_id = secrets.token_hex(3)
    engine.start(
        run,
        label=spec.label,
        campaign={"id": campaign_id, "runs": spec.runs,
                  **engine.campaign_fields(process, spec),
                  "variant": target.variant, "poll_ms": spec.poll_ms,
                  "timeout_s": spec.timeout_s, "warmup_runs": spec.warmup_runs,
                  "image_id": target.image_id, "flavor_id": target.flavor_id,
                  "networks": "none", "microversion": pusher.mv},
        vim={"name": "nova", "version": target.facts.get("nova_version", "unknown"),
             "max_microversion": facts["compute_version"], "auth_url": facts["auth_url"],
             "compute_url": facts["compute_url"], "lab": target.lab},
        hypervisor={"name": "libvirt/qemu", "virt_type": target.facts.get("virt_type"),
                    "compute_driver": target.facts.get("compute_driver"),
                    "driver_variant": target.variant},
        hosts={"pusher": platform.node(), "capture": {"iface": target.capture_iface,
                                                       "netns": target.capture_netns,
                                                       "filter": target.capture_filter}},
        clock="one machine, one clock: capture, client, hook and VIM times are directly "
              "comparable (instance action times have second resolution)"
        if target.lab else "capture and VIM clocks may differ: check NTP on every host",
        leftovers_purged=purged,
    )
    hooks = nova_hooks(target.hooks_file)
    capture = None
    if target.capture_iface:
        capture = Capture(run.file(rundir.CAPTURE), target.capture_iface,
                          target.capture_filter, netns=target.capture_netns).start()
    servers: set[str] = set()
    kept: list[Any] = []  # --keep: records of servers left ACTIVE until the end

    def line_of(rec: Any, engine_fields: dict[str, Any] | None = None) -> dict[str, Any]:
        line = rec.as_json()
        line["variant"] = target.variant
        line["warmup"] = rec.run < spec.warmup_runs
        line.update(engine_fields or {})
        line["_actions"] = [{**ev, "vim": "nova", "server_id": rec.server_id}
                            for ev in rec.actions]
        return line

    def record(i: int, p: NovaPusher) -> dict[str, Any]:
        rec = p.run_once(i, f"{SERVER_PREFIX}{spec.label}-{campaign_id}-{i:04d}", server,
                         spec.lifetime_s, spec.keep)
        return {"_rec": rec}

    def write(line: dict[str, Any], out: engine.Outputs) -> tuple[bool, str]:
        rec = line.pop("_rec")
        engine_fields = {k: line[k] for k in ("t_intended_ns", "t_sent_ns", "send_lag_ms",
                                               "in_flight") if k in line}
        if rec.t_delete_ns is None and rec.ok and spec.keep:
            kept.append((rec, engine_fields))
            return True, f"run {rec.run} ACTIVE, kept until the end"
        return file_record(line_of(rec, engine_fields), out)

    def file_record(line: dict[str, Any], out: engine.Outputs) -> tuple[bool, str]:
        for ev in line.pop("_actions"):
            out.vim_events.write(ev)
        out.requests.write(line)
        if line.get("server_id"):
            servers.add(line["server_id"])
        for h in hooks.take_all(servers):
            out.hooks.write(h)
        return line["ok"], (f"run {line['run']} ACTIVE after {line['active_ms']:.0f} ms"
                            if line["ok"] else f"[red]run {line['run']} failed: {line['error']}")

    def one(i: int, out: engine.Outputs) -> tuple[bool, str]:
        return write(record(i, pusher), out)

    def finish(out: engine.Outputs) -> None:
        for rec, engine_fields in kept:  # --keep: every server deleted now, even interrupted
            file_record(line_of(pusher.stop_kept(rec, server), engine_fields), out)
        for h in hooks.take_all(servers):
            out.hooks.write(h)

    local = threading.local()  # one openstacksdk connection per worker thread
    opened: list[Any] = []

    def fire(i: int, _intended_ns: int) -> dict[str, Any]:
        p = getattr(local, "pusher", None)
        if p is None:
            c = connect(target.cloud)
            opened.append(c)
            p = local.pusher = NovaPusher(c)
        return record(i, p)

    try:
        if process is None:
            return engine.run_sequential(run, console, spec.label, spec.runs, one,
                                         capture=capture, finish=finish,
                                         what="in-flight server deleted")
        return engine.run_arrivals(
            run, console, spec.label, process, fire, write, capture=capture,
            what="in-flight servers deleted", max_in_flight=spec.max_in_flight,
            max_runs=spec.runs, max_duration_s=spec.duration_s, finish=finish)
    finally:
        for c in [conn, *opened]:
            c.close()


def lab_target(variant: str, accelerator: str, console: Console) -> NovaTarget:
    """The embedded Nova lab (vimprof.lab.nova) as a target, brought up when not running."""
    from vimprof.lab import nova as lab

    if variant not in VARIANTS:
        raise VimprofError(f"--nova-driver must be one of {', '.join(VARIANTS)}")
    state = lab.current()
    if state is None:
        console.print("bringing the Nova lab up (netns hostn; about a minute, more on a busy "
                      "machine) ...")
        state = lab.up(accelerator=accelerator)
    image = state.image_ids["diskless" if variant == "tuned" else "stock"]
    if variant == "tuned" and state.driver_kit not in ("vimprof", "patched"):
        raise VimprofError("--nova-driver tuned needs the lab's driver kit vimprof or patched: "
                           "`vimprof lab up nova --nova-driver vimprof`")
    return NovaTarget(
        cloud=state.cloud(), image_id=image, flavor_id=state.flavor_id, variant=variant,
        capture_iface=state.capture_iface, capture_netns=state.capture_netns,
        capture_filter=CAPTURE_FILTER, hooks_file=state.hooks_file, lab=True,
        facts={"nova_version": state.nova_version, "virt_type": state.virt_type,
               "compute_driver": state.compute_driver, "driver_kit": state.driver_kit,
               "accelerator": state.accelerator})


def remote_target(cloud: str, image: str | None, flavor: str | None, variant: str,
                  iface: str | None, hooks_file: str | None) -> NovaTarget:
    """An existing cloud from clouds.yaml (`cloud`); image and flavor are ids or names."""
    if not image or not flavor:
        raise VimprofError("--os-cloud needs --image and --flavor (ids or names)")
    conn = connect({"cloud": cloud})
    try:
        img = conn.image.find_image(image)
        flv = conn.compute.find_flavor(flavor)
    except Exception as exc:  # noqa: BLE001 - keystoneauth errors: unreachable, 401 ...
        raise VimprofError(f"cloud {cloud!r}: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    if img is None:
        raise VimprofError(f"image {image!r} not found in Glance of cloud {cloud!r}")
    if flv is None:
        raise VimprofError(f"flavor {flavor!r} not found in Nova of cloud {cloud!r}")
    return NovaTarget(cloud={"cloud": cloud}, image_id=img.id, flavor_id=flv.id,
                      variant=variant, capture_iface=iface, capture_netns=None,
                      hooks_file=hooks_file, lab=False)


def cli_capture(console: Console, *, runs: int, label: str, runs_dir: Path, force: bool,
                variant: str, accel: str, os_cloud: str | None, image: str | None,
                flavor: str | None, capture_iface: str | None, poll_ms: float,
                timeout_s: float, warmup_runs: int, arrival: str = "sequential",
                max_in_flight: int = 16, duration_s: float | None = None,
                seed: int | None = None, lifetime_s: float = 0.0,
                keep: bool = False) -> tuple[RunDir, NovaTarget]:
    """`vimprof capture --vim nova`: pick the target (lab or --os-cloud), run the campaign.

    Returns the run directory and the target (the CLI analyzes when it captured).
    """
    if os_cloud:
        target = remote_target(os_cloud, image, flavor, variant, capture_iface, None)
    else:
        if image or flavor or capture_iface:
            raise VimprofError("--image, --flavor and --capture-iface apply with --os-cloud; "
                               "the lab uses its own")
        target = lab_target(variant, accel, console)
    if warmup_runs >= runs:
        raise VimprofError(f"--warmup {warmup_runs} leaves no measured run of {runs}")
    run = rundir.RunDir.create(label, runs_dir, force=force)
    spec = NovaCampaignSpec(label=label, runs=runs, poll_ms=poll_ms, timeout_s=timeout_s,
                            warmup_runs=warmup_runs, arrival=arrival,
                            max_in_flight=max_in_flight, duration_s=duration_s, seed=seed,
                            lifetime_s=lifetime_s, keep=keep)
    console.print(f"campaign [bold]{label}[/]: {runs} server boot(s) against Nova "
                  f"({variant}, image {target.image_id[:8]}, flavor {target.flavor_id}, "
                  f"polling every {poll_ms:g} ms)"
                  + ("" if arrival == "sequential" else f", arrivals {arrival}"))
    failures = run_campaign(spec, target, run, console)
    if failures:
        console.print(f"[yellow]{failures} of {runs} run(s) failed; see "
                      f"{run.file(rundir.REQUESTS)}")
    return run, target
