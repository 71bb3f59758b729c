"""Network namespaces and veth links for lab hosts (iproute2), addressed from 198.18.0.0/15.

198.18.0.0/15 is the range RFC 2544 reserves for benchmarking; lab hosts use nothing else and
get no default route, so nothing they send can leave the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time

from vimprof.errors import VimprofError


def require_root() -> None:
    """Raise VimprofError unless we can create network namespaces (root, iproute2)."""
    if os.geteuid() != 0:
        raise VimprofError(
            "the lab needs root to create network namespaces: run as root, or profile an "
            "existing cluster with --nomad-addr"
        )
    if shutil.which("ip") is None:
        raise VimprofError("the lab needs iproute2 (`ip`): run scripts/setup")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS`; raise VimprofError with iproute2's message when it fails and check is set."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise VimprofError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc


def exists(ns: str) -> bool:
    return os.path.exists(f"/run/netns/{ns}")


def create(ns: str) -> None:
    """Create namespace `ns` with loopback up (idempotent)."""
    if not exists(ns):
        ip("netns", "add", ns)
    ip("-n", ns, "link", "set", "lo", "up")


def veth(a_ns: str | None, a_if: str, a_cidr: str, b_ns: str, b_if: str, b_cidr: str) -> None:
    """A veth pair a_if<->b_if, ends moved into a_ns (None: this namespace) and b_ns, addressed."""
    where_a = ["-n", a_ns] if a_ns else []
    if ip(*where_a, "link", "show", a_if, check=False).returncode == 0:
        return
    # Created in place, so the two ends may share a name (one per namespace).
    ip(*where_a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b_ns)
    ip(*where_a, "addr", "add", a_cidr, "dev", a_if)
    ip("-n", b_ns, "addr", "add", b_cidr, "dev", b_if)
    ip(*where_a, "link", "set", a_if, "up")
    ip("-n", b_ns, "link", "set", b_if, "up")


def pids(ns: str) -> list[int]:
    """Processes living in namespace `ns`."""
    if not exists(ns):
        return []
    out = ip("netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split()]


def kill_all(ns: str, grace_s: float = 5.0) -> list[int]:
    """SIGTERM every process in `ns`, SIGKILL what survives `grace_s`; returns the pids found."""
    found = pids(ns)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids(ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while pids(ns) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not pids(ns):
            break
    return found


def delete(ns: str) -> None:
    """Delete namespace `ns` (its veth ends go with it, and so do their peers)."""
    if exists(ns):
        ip("netns", "del", ns)
