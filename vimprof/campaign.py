"""A capture campaign: N sequential instantiations against a VIM, recorded into a run directory.

The flow of ARCHITECTURE.md: the pusher fires requests (requests.jsonl), the capture records the
traffic at the VIM core host (capture.pcap), the VIM's own events are kept (vim-events.jsonl),
and the analyzer turns it all into timelines.jsonl at the end.

Ctrl-C stops the campaign: the in-flight job is purged, the capture is closed, the manifest says
the campaign was interrupted, and what was recorded so far stays readable.
"""

from __future__ import annotations

import platform
import secrets
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import vimprof
from vimprof import rundir
from vimprof.capture import Capture
from vimprof.errors import VimprofError
from vimprof.pushers.nomad import JOB_PREFIX, GuestSpec, NomadPusher
from vimprof.rundir import RunDir, now_ns


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


@dataclass(frozen=True)
class CampaignSpec:
    label: str
    runs: int
    memory_mb: int = 128
    timeout_s: float = 60.0


def run_campaign(spec: CampaignSpec, target: Target, run: RunDir, console: Console) -> int:
    """Run the campaign into `run`; returns the number of failed runs.

    Raises VimprofError when the VIM is unreachable before the first request or the capture
    cannot start; KeyboardInterrupt after cleaning up.
    """
    pusher = NomadPusher(target.nomad_addr, timeout_s=spec.timeout_s)
    version = pusher.version()  # also: unreachable -> clear error before any request
    leftovers = pusher.leftovers()
    for job_id in leftovers:
        pusher.purge(job_id)
    if leftovers:
        console.print(f"purged {len(leftovers)} job(s) left by an earlier campaign")
        pusher.wait_no_allocs_running()

    campaign_id = secrets.token_hex(3)
    guest = GuestSpec(kernel=target.kernel, accelerator=target.accelerator,
                      memory_mb=spec.memory_mb)
    run.update_manifest(
        vimprof_version=vimprof.__version__,
        label=spec.label,
        campaign={"id": campaign_id, "runs": spec.runs, "mode": "sequential",
                  "memory_mb": spec.memory_mb, "accelerator": target.accelerator,
                  "timeout_s": spec.timeout_s},
        vim={"name": "nomad", "version": version, "addr": target.nomad_addr, "lab": target.lab},
        hypervisor={"name": "qemu", "accelerator": target.accelerator, "kernel": target.kernel},
        hosts={"pusher": platform.node(), "capture": {"iface": target.capture_iface,
                                                       "netns": target.capture_netns,
                                                       "filter": target.capture_filter}},
        clock="one machine, one clock: capture, client and VIM times are directly comparable"
        if target.lab else "capture and VIM clocks may differ: check NTP on every host",
        start_ns=now_ns(),
    )

    capture = None
    if target.capture_iface:
        capture = Capture(run.file(rundir.CAPTURE), target.capture_iface,
                          target.capture_filter, netns=target.capture_netns).start()
    failures = 0
    interrupted = False
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[last]}"))
    try:
        with run.writer(rundir.REQUESTS) as requests_out, \
                run.writer(rundir.VIM_EVENTS) as events_out, \
                Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(spec.label, total=spec.runs, last="")
            for i in range(spec.runs):
                job_id = f"{JOB_PREFIX}{spec.label}-{campaign_id}-{i:04d}"
                rec = pusher.run_once(i, job_id, guest)
                line = rec.as_json()
                requests_out.write(line)
                for ev in rec.task_events:
                    events_out.write(ev)
                failures += not rec.ok
                last = (f"running after {line['running_ms']:.0f} ms" if rec.ok
                        else f"[red]failed: {rec.error}")
                progress.update(task, advance=1, last=last)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if capture:
            capture.stop()
        run.update_manifest(end_ns=now_ns(), interrupted=interrupted, failures=failures,
                            capture_stats=capture.stats if capture else None)
    if interrupted:
        console.print(f"[yellow]interrupted: in-flight job purged; partial run kept in {run.path}")
        raise KeyboardInterrupt
    return failures


def lab_target(accelerator: str, console: Console) -> Target:
    """The embedded Nomad lab as a target, brought up when it is not running."""
    from vimprof.lab import nomad as lab

    state = lab.current()
    if state is None:
        console.print("bringing the Nomad lab up (hostc: server, hostl: client) ...")
        state = lab.up(accelerator=accelerator)
    # A per-campaign accelerator override does not need a new lab: it is a job setting.
    accel = state.accelerator if accelerator == "auto" else accelerator
    return Target(nomad_addr=state.http_addr, kernel=state.kernel, accelerator=accel,
                  capture_iface=state.capture_iface, capture_netns=state.capture_netns,
                  capture_filter=lab.CAPTURE_FILTER, lab=True)


def remote_target(addr: str, kernel: str, accelerator: str, iface: str | None) -> Target:
    if accelerator == "auto":
        accelerator = "tcg"
    if not Path(kernel).is_absolute():
        raise VimprofError("--kernel must be an absolute path on the Nomad client")
    return Target(nomad_addr=addr, kernel=kernel, accelerator=accelerator,
                  capture_iface=iface, capture_netns=None,
                  capture_filter="tcp port 4646 or tcp port 4647", lab=False)
