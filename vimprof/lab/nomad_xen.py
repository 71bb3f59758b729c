"""Nomad on Xen: the Nomad client with the micro-VNF driver plugin (xl backend) inside dom0.

    hostc (Nomad lab)                     hostx                 QEMU/TCG: Xen 4.17, dom0
    nomad server 198.18.0.1 (RPC 4647) -- vx-hostc veth -- tap -- nomad client "xen-dom0"
    artifact server 198.18.0.1:8080                                + nomad-driver-xen (xl)
                                                                     -> xl create / destroy

The paper's HostC/HostL on Xen (Ventre et al. 2016, Sec. V): the server and the artifact server
stay where the Nomad lab (vimprof.lab.nomad) runs them, the client runs in the Xen lab's dom0
(vimprof.lab.xen) from the host share (<xen lab>/share, /mnt/host in dom0): the Nomad binary
of the lab's variant, the plugin in plugins/, the hooks file hooks.jsonl (read on the host).
The Nomad lab's own client in hostl stays up; jobs for the xl backend carry a constraint on
the plugin's `driver.xen.xl` attribute, which only dom0 has.

The guest is `vnfguest.xen`, a PV GRUB image built here from the Debian grub-xen-bin package
scripts/setup-xen downloaded: it prints READY_LINE on its console and then sleeps (busy, in
GRUB) until destroyed, so a Nomad task stays running (the lab's `testguest.xen` halts at once).
It is in the Nomad lab's image directory (the stock driver's artifact), in dom0's DOM0_IMAGES
(the tuned driver's `image_dirs`), and FLOOR_CFG in dom0 is its xl config for the direct-xl
floor probe (vimprof.drivers.xl_floor), same kernel and memory as the plugin renders.

State: <xen lab>/nomad-xen.json (gone with `vimprof lab down xen`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from vimprof import paths
from vimprof.errors import VimprofError
from vimprof.lab import nomad, xen

NODE_NAME = "xen-dom0"
GUEST_KERNEL = "vnfguest.xen"
READY_LINE = "vimprof-vnfguest: ready"
MEMORY_MB = 32  # PV GRUB runs in 32 MB; the plugin accepts 4 MB and more
DOM0_IMAGES = "/var/lib/vimprof/images"
FLOOR_CFG = "/var/lib/vimprof/vnffloor.cfg"
FLOOR_NAME = "vp-floor"
DOMAIN_PREFIX = "nomad-"  # the plugin names domains nomad-<task>-<alloc id[:8]>
READY_TIMEOUT_S = 240.0  # client start to node ready in dom0: ~20-60 s under TCG
GUEST_GRUB_CFG = f'echo "{READY_LINE}"\nsleep 100000000\n'


@dataclass
class NomadXenState:
    """What `up` started; persisted as nomad-xen.json in the Xen lab directory."""

    http_addr: str  # the Nomad server's HTTP API (from the root namespace)
    nomad: str  # host path of the Nomad binary the client runs
    nomad_variant: str
    driver_variant: str
    client_pid: int  # in dom0
    node_id: str
    hooks_file: str  # host path of the plugin's hooks file (dom0: /mnt/host/hooks.jsonl)
    kernel: str  # host path of the guest kernel (its name is the task's `kernel`)
    artifact_url: str  # base URL of the artifact server (the stock driver's downloads)
    xenstored_socket: str
    xen_qemu_pid: int = 0  # the Xen lab this client runs in
    memory_mb: int = MEMORY_MB
    floor_cfg: str = FLOOR_CFG
    floor_name: str = FLOOR_NAME
    ready_line: str = READY_LINE


def _state_path() -> Path:
    return xen.lab_dir() / "nomad-xen.json"


def _load() -> NomadXenState | None:
    try:
        return NomadXenState(**json.loads(_state_path().read_text()))
    except (OSError, ValueError, TypeError):
        return None


def guest_image() -> Path:
    """The diskless PV test micro-VNF (PV GRUB printing READY_LINE, then sleeping).

    Built once with grub-mkimage from the grub-xen-bin and grub-common packages that
    scripts/setup-xen downloaded ($VIMPROF_CACHE/xen/debs), cached under
    $VIMPROF_CACHE/xen/vnfguest/<key>/. Raises VimprofError when the packages are missing or
    grub-mkimage fails.
    """
    debs = paths.cache_root() / "xen" / "debs"
    found = {p: sorted(debs.glob(f"{p}_*_amd64.deb")) for p in ("grub-xen-bin", "grub-common")}
    if not all(found.values()):
        raise VimprofError(f"no grub-xen-bin/grub-common packages in {debs}: run scripts/setup-xen")
    pkgs = [v[-1] for v in found.values()]
    key = hashlib.sha256((GUEST_GRUB_CFG + "".join(p.name for p in pkgs)).encode()).hexdigest()
    out = paths.cache_root() / "xen" / "vnfguest" / key[:16] / GUEST_KERNEL
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        for deb in pkgs:
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, capture_output=True)
        cfg = Path(tmp) / "grub.cfg"
        cfg.write_text(GUEST_GRUB_CFG)
        env = dict(os.environ, LD_LIBRARY_PATH=f"{root}/usr/lib/x86_64-linux-gnu:"
                                               f"{root}/lib/x86_64-linux-gnu")
        res = subprocess.run(
            [str(root / "usr/bin/grub-mkimage"), "-d", str(root / "usr/lib/grub/x86_64-xen"),
             "-O", "x86_64-xen", "-c", str(cfg), "-p", "/nonexistent",
             "-o", f"{out}.part", "echo", "sleep"], env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise VimprofError(f"grub-mkimage of {GUEST_KERNEL} failed: {res.stderr.strip()}; "
                               "rerun scripts/setup-xen")
    os.replace(f"{out}.part", out)
    return out


CLOCKSTEP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) { /* clockstep [delta_ns]: step CLOCK_REALTIME, print it (ns) */
    long long d = argc > 1 ? atoll(argv[1]) : 0, ns;
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    if (d) {
        ns = (long long)t.tv_sec * 1000000000LL + t.tv_nsec + d;
        t.tv_sec = ns / 1000000000LL; t.tv_nsec = ns % 1000000000LL;
        if (clock_settime(CLOCK_REALTIME, &t)) { perror("clock_settime"); return 1; }
    }
    printf("%lld\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
    return 0;
}
"""
DOM0_CLOCKSTEP = "/usr/lib/vimprof/clockstep"


def _clockstep() -> Path:
    """A static `clockstep` binary for dom0 (host gcc, cached by source hash)."""
    key = hashlib.sha256(CLOCKSTEP_C.encode()).hexdigest()[:16]
    out = paths.cache_root() / "xen" / "clockstep" / key / "clockstep"
    if out.is_file():
        return out
    gcc = shutil.which("gcc")
    if gcc is None:
        raise VimprofError("gcc is missing (dom0's clock tool is built with it): run "
                           "scripts/setup-xen")
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.parent / "clockstep.c"
    src.write_text(CLOCKSTEP_C)
    res = subprocess.run([gcc, "-static", "-O2", "-o", f"{out}.part", str(src)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise VimprofError(f"building clockstep failed: {res.stderr.strip()[-500:]}; "
                           "is libc6-dev installed?")
    os.replace(f"{out}.part", out)
    return out


def dom0_clock_offset(state: xen.XenLabState | None = None, samples: int = 5) -> tuple[int, int]:
    """dom0's CLOCK_REALTIME minus the host's time.time_ns(), ns, and its uncertainty, ns.

    Each sample reads dom0's clock with `clockstep` under vp-run and maps the middle of that
    command onto the host clock (symmetric relay latency, as vimprof.drivers.xl_floor does);
    the sample whose command was shortest wins, the uncertainty is half its duration. Nomad's
    task events and the plugin's hooks are stamped with dom0's clock, the capture and the
    XenStore watcher with the host's. Raises VimprofError like xen.run.
    """
    best: tuple[int, int] | None = None
    for _ in range(samples):
        res = xen.run(f"{xen.VP_RUN} {DOM0_CLOCKSTEP}", timeout_s=30, state=state, check=True)
        _, t0, t1 = res.markers[0]
        _, o0, o1 = res.markers[-1]
        host_mid = (t0 + t1) // 2 + (res.sent_ns + res.received_ns) // 2 - (o0 + o1) // 2
        cand = (int(res.output.split()[0]) - host_mid, (t1 - t0) // 2)
        if best is None or cand[1] < best[1]:
            best = cand
    assert best is not None
    return best


def sync_dom0_clock(state: xen.XenLabState | None = None) -> dict[str, float]:
    """Step dom0's clock onto the host's (Xen starts dom0 from the emulated RTC: ~1 s off,
    and it drifts under TCG). Returns {"offset_before_ms", "offset_after_ms",
    "uncertainty_ms"} (dom0 minus host). Raises VimprofError like xen.run."""
    before, _ = dom0_clock_offset(state)
    xen.run(f"{DOM0_CLOCKSTEP} {-before}", timeout_s=30, state=state, check=True)
    after, unc = dom0_clock_offset(state)
    return {"offset_before_ms": round(before / 1e6, 3), "offset_after_ms": round(after / 1e6, 3),
            "uncertainty_ms": round(unc / 1e6, 3)}


def floor_config(name: str = FLOOR_NAME, memory_mb: int = MEMORY_MB) -> str:
    """The xl config of the floor probe's guest: what the plugin renders (no vif)."""
    return (f'name = "{name}"\ntype = "pv"\nkernel = "{DOM0_IMAGES}/{GUEST_KERNEL}"\n'
            f"memory = {memory_mb}\nmaxmem = {memory_mb}\nvcpus = 1\nvif = [ ]\ndisk = [ ]\n"
            'on_poweroff = "destroy"\non_reboot = "destroy"\non_crash = "destroy"\n')


def _plugin_hcl(variant: str) -> str:
    return f"""
plugin_dir = "{xen.DOM0_SHARE}/plugins"
plugin "{nomad.PLUGIN_FILE}" {{
  config {{
    image_dirs    = ["{DOM0_IMAGES}"]
    variant       = "{variant}"
    hooks_file    = "{xen.DOM0_SHARE}/hooks.jsonl"
    ready_timeout = "60s"
    xl {{
      bridge = "none"
    }}
  }}
}}
"""


def domains(state: xen.XenLabState | None = None) -> list[str]:
    """Names of the domUs in dom0 (`xl list`), Domain-0 excluded."""
    out = xen.run("xl list", timeout_s=30, state=state, check=True).output
    return [ln.split()[0] for ln in out.splitlines()[1:] if ln.strip()
            and ln.split()[0] != "Domain-0"]


def destroy_leftovers(state: xen.XenLabState | None = None) -> list[str]:
    """`xl destroy` every domain the plugin or the floor probe made; returns their names."""
    gone = [d for d in domains(state) if d.startswith(DOMAIN_PREFIX) or d == FLOOR_NAME]
    for d in gone:
        xen.run(f"xl destroy {d}", timeout_s=60, state=state)
    return gone


def _node(http_addr: str) -> dict | None:
    """The ready dom0 node with the xen driver healthy and its xl backend detected, or None."""
    for n in requests.get(f"{http_addr}/v1/nodes", timeout=5).json():
        if n["Name"] != NODE_NAME or n["Status"] != "ready":
            continue
        drv = (n.get("Drivers") or {}).get("xen") or {}
        if drv.get("Detected") and drv.get("Healthy") and "driver.xen.xl" in (
                drv.get("Attributes") or {}):
            return n
    return None


def _stop_client(pid: int, xs: xen.XenLabState) -> None:
    if pid > 0:
        xen.run(f"kill -INT {pid} 2>/dev/null; i=0; while kill -0 {pid} 2>/dev/null "
                f"&& [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; kill -9 {pid} 2>/dev/null",
                timeout_s=60, state=xs)


def up(nomad_variant: str = "stock", driver_variant: str = "stock",
       accelerator: str = "auto") -> NomadXenState:
    """Bring Nomad on Xen up (idempotent for the same variants): the Nomad lab (server in
    hostc) and the Xen lab, routed together, and a Nomad client in dom0 loading the plugin
    (variant `driver_variant`, xl backend, no vif) with the lab's Nomad build (`nomad_variant`).

    Returns the state once node NODE_NAME is ready with the xen driver's xl backend. Raises
    VimprofError when a lab cannot come up, the plugin is not built, or the node is not ready
    within READY_TIMEOUT_S (the dom0 client is then stopped; the log tail is in the message).
    """
    nlab = nomad.up(accelerator=accelerator, nomad_variant=nomad_variant,
                    driver_variant=driver_variant)
    xs = xen.up()
    old = _load()
    if old and old.xen_qemu_pid != xs.qemu_pid:  # a client of an earlier Xen lab: gone
        old = None
    if (old and old.nomad_variant == nomad_variant and old.driver_variant == driver_variant
            and old.http_addr == nlab.http_addr
            and xen.run(f"kill -0 {old.client_pid}", state=xs).rc == 0):
        try:
            if _node(nlab.http_addr):
                return old
        except (requests.RequestException, ValueError):
            pass
    if old:
        _stop_client(old.client_pid, xs)
        _state_path().unlink(missing_ok=True)
    try:
        plugin = paths.driver_plugin()
    except (VimprofError, AttributeError):
        raise VimprofError("the micro-VNF driver plugin is not built: run scripts/setup") from None
    kernel = guest_image()
    share = Path(xs.share_dir)
    (share / "plugins").mkdir(exist_ok=True)
    shutil.copy2(plugin, share / "plugins" / nomad.PLUGIN_FILE)
    shutil.copy2(kernel, share / GUEST_KERNEL)
    shutil.copy2(kernel, Path(nlab.lab_dir) / "images" / GUEST_KERNEL)  # the artifact
    hooks = share / "hooks.jsonl"
    hooks.touch()
    # A previous client's task dirs keep mounts (v1.6: the tmpfs of secrets/ and private/):
    # unmount them, deepest first, before the data dir can go.
    xen.run(f"mkdir -p {DOM0_IMAGES} && cp {xen.DOM0_SHARE}/{GUEST_KERNEL} {DOM0_IMAGES}/ && "
            "for m in $(cut -d' ' -f2 /proc/mounts | grep '^/tmp/nomad/' | sort -r); do "
            "umount $m; done; rm -rf /tmp/nomad", state=xs, check=True)
    # Nomad's alloc_dir hook looks the user "nobody" up; dom0's initramfs has no such entry
    xen.run("touch /etc/passwd /etc/group; grep -q '^nobody:' /etc/passwd || echo "
            "'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >> /etc/passwd; "
            "grep -q '^nogroup:' /etc/group || echo 'nogroup:x:65534:' >> /etc/group",
            state=xs, check=True)
    xen.put_file(FLOOR_CFG, floor_config().encode(), state=xs)
    shutil.copy2(_clockstep(), share / "clockstep")
    xen.run(f"cp {xen.DOM0_SHARE}/clockstep {DOM0_CLOCKSTEP}", state=xs, check=True)
    sync_dom0_clock(xs)  # before the client starts: its events carry dom0's clock
    xen.link_namespace(nomad.SERVER_NS, routes=[f"{nomad.SERVER_IP}/32"], state=xs)
    destroy_leftovers(xs)
    pid = xen.start_nomad_client(nlab.nomad, [f"{nomad.SERVER_IP}:{nomad.RPC_PORT}"],
                                 name=NODE_NAME, extra_hcl=_plugin_hcl(driver_variant), state=xs)
    deadline = time.monotonic() + READY_TIMEOUT_S
    node = None
    while node is None:
        try:
            node = _node(nlab.http_addr)
        except (requests.RequestException, ValueError):
            node = None
        if node is None:
            alive = xen.run(f"kill -0 {pid}", state=xs).rc == 0
            if not alive or time.monotonic() > deadline:
                log = share / "nomad-client.log"
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]
                                 if log.exists() else [])
                _stop_client(pid, xs)
                why = "exited" if not alive else f"not ready within {READY_TIMEOUT_S:.0f} s"
                raise VimprofError(f"the Nomad client in dom0 {why} (node {NODE_NAME} with the "
                                   f"xen driver's xl backend); log {share}/nomad-client.log:\n"
                                   f"{tail}")
            time.sleep(1)
    state = NomadXenState(http_addr=nlab.http_addr, nomad=nlab.nomad,
                          nomad_variant=nomad_variant, driver_variant=driver_variant,
                          client_pid=pid, node_id=node["ID"], hooks_file=str(hooks),
                          kernel=str(Path(nlab.lab_dir) / "images" / GUEST_KERNEL),
                          artifact_url=nlab.artifact_url, xenstored_socket=xs.xenstored_socket,
                          xen_qemu_pid=xs.qemu_pid)
    _state_path().write_text(json.dumps(asdict(state), indent=2) + "\n")
    return state


def current() -> NomadXenState | None:
    """The state when the Xen lab runs and the dom0 client was started by `up`, else None."""
    state, xs = _load(), xen.current()
    return state if state and xs and state.xen_qemu_pid == xs.qemu_pid else None


def down(labs: bool = False) -> list[str]:
    """Stop the dom0 Nomad client, destroy the domains it or the floor probe left, purge the
    node from the server; with `labs` also bring the Xen and Nomad labs down. Idempotent;
    returns what was done."""
    done: list[str] = []
    state = current()
    xs = xen.current()
    if state and xs:
        _stop_client(state.client_pid, xs)
        done.append(f"stopped the Nomad client in dom0 (pid {state.client_pid})")
        for d in destroy_leftovers(xs):
            done.append(f"destroyed domain {d}")
        with contextlib.suppress(requests.RequestException):
            requests.put(f"{state.http_addr}/v1/node/{state.node_id}/purge", timeout=5)
    _state_path().unlink(missing_ok=True)
    if labs:
        done += xen.down() + nomad.down()
    return done
