"""`vimprof clean`: find and delete what earlier campaigns left on a target.

A campaign stopped by SIGINT, SIGTERM or SIGHUP deletes its in-flight instance itself, and the
next campaign on the same target purges leftovers before it starts. This is for the rest: a
vimprof killed with SIGKILL, a host that rebooted mid-campaign. Only objects carrying vimprof's
tag are touched: Nomad jobs named `vimprof-*` whose own Meta has `vimprof = "1"`, Nova servers
named `vimprof-*` tagged `vimprof` (vimprof.pushers.*.leftovers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console

from vimprof import interrupts
from vimprof.errors import VimprofError
from vimprof.pushers.nomad import TERMINAL, NomadPusher
from vimprof.pushers.nomad_access import ClusterAccess, reachable


@dataclass
class Cleaned:
    """What `clean` found (`found`: one line per object) and deleted."""

    target: str
    found: list[str] = field(default_factory=list)
    deleted: int = 0
    remaining: list[str] = field(default_factory=list)


def nomad_access(addr: str | None, token: str | None = None) -> ClusterAccess:
    """`addr` with its token and TLS settings (flags, then NOMAD_* variables), or the running
    embedded lab's API; VimprofError when neither exists."""
    if addr:
        return ClusterAccess.from_env(addr, token)
    from vimprof.lab import nomad as lab

    state = lab.current()
    if state is None:
        raise VimprofError("the Nomad lab is not running, so it has nothing to clean: pass "
                           "--nomad-addr for a cluster")
    return ClusterAccess(addr=state.http_addr)


def clean_nomad(access: ClusterAccess, dry_run: bool, console: Console) -> Cleaned:
    """Purge vimprof's leftover jobs (their allocations stop, their guests end); waits until
    none of their allocations still runs. Raises VimprofError when Nomad is unreachable or
    refuses the listing."""
    reachable(access)
    pusher = NomadPusher(access.addr, access=access)
    out = Cleaned(target=f"Nomad at {access.addr}")
    jobs = pusher.leftovers()
    for job_id in jobs:
        allocs = pusher.api.job.get_allocations(job_id)
        live = [f"{a['ID'][:8]} {a['ClientStatus']} on node {a['NodeID'][:8]}"
                for a in allocs if a["ClientStatus"] not in TERMINAL]
        out.found.append(f"job {job_id}" + (f" (allocation {', '.join(live)})" if live else
                                            " (no running allocation)"))
    _say(console, out, dry_run)
    if dry_run or not jobs:
        return out
    for job_id in jobs:
        with interrupts.cleaning(f"purging job {job_id}"):
            pusher.purge(job_id)
        out.deleted += 1
    with interrupts.cleaning("waiting for the purged jobs' allocations to stop"):
        if not pusher.wait_no_allocs_running(timeout_s=60.0):
            out.remaining = [a["ID"] for a in pusher.api.allocations.get_allocations(prefix="")
                             if a["JobID"] in jobs and a["ClientStatus"] not in TERMINAL]
    return out


def clean_nova(cloud: dict, dry_run: bool, console: Console, what: str) -> Cleaned:
    """Delete vimprof's leftover servers of `cloud` (openstack.connect() arguments) and wait
    for each one's 404. Raises VimprofError when the cloud refuses the listing."""
    from vimprof.campaigns.nova import connect
    from vimprof.pushers.nova import NovaPusher

    conn = connect(cloud)
    try:
        pusher = NovaPusher(conn)
        pusher.check()
        out = Cleaned(target=what)
        servers = pusher.leftovers()
        out.found = [f"server {sid}" for sid in servers]
        _say(console, out, dry_run)
        if dry_run:
            return out
        for sid in servers:
            with interrupts.cleaning(f"deleting server {sid}"):
                if pusher.purge(sid):
                    out.deleted += 1
                else:
                    out.remaining.append(sid)
        return out
    finally:
        conn.close()


def nova_cloud(os_cloud: str | None) -> tuple[dict, str]:
    """openstack.connect() arguments and a name for the target: `os_cloud` from clouds.yaml,
    or the running embedded lab's admin; VimprofError when neither exists."""
    if os_cloud:
        return {"cloud": os_cloud}, f"cloud {os_cloud}"
    from vimprof.lab import nova as lab

    state = lab.current()
    if state is None:
        raise VimprofError("the Nova lab is not running, so it has nothing to clean: pass "
                           "--os-cloud for a cloud")
    return state.cloud(), "the Nova lab"


def _say(console: Console, out: Cleaned, dry_run: bool) -> None:
    if not out.found:
        console.print(f"{out.target}: nothing left by vimprof")
        return
    verb = "would delete" if dry_run else "deleting"
    console.print(f"{out.target}: {verb} {len(out.found)} leftover(s) of earlier campaigns:")
    for line in out.found:
        console.print(f"  {line}")
