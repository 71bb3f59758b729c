"""The Xen lab: Debian's Xen 4.17 with a PV dom0, nested in QEMU (TCG), on a lab-only network.

    root namespace (vimprof, pyxs)     hostx (lab namespace)          QEMU/TCG: Xen 4.17
    <lab>/xenstored.sock -- socat -->  vx-tap 198.18.3.1/25 -- tap --  dom0 eth0 198.18.3.2/25
    <lab>/command.sock   -- socat -->                                  xenstored relay TCP 8766
                                                                       command relay TCP 8765

scripts/setup-xen builds the images (hypervisor, dom0 kernel, dom0 initramfs with xl, xenstored,
xenconsoled and busybox, the PV test guest) from Debian packages. QEMU runs inside network
namespace hostx, whose only link is the tap to dom0; no default route exists, so nothing leaves
the machine. The host reaches dom0 through two Unix sockets in the lab directory, each a socat
(running in hostx) to a TCP relay in dom0: one joins dom0's xenstored (pyxs connects there), the
other runs one shell command per connection (`run`, `put_file`). dom0 also mounts the host
directory <lab>/share at /mnt/host (9p over virtio, read-write): binaries too big for the
initramfs (a Nomad client, a driver plugin) run from there and files written there (hook logs)
are read on the host. `link_namespace` routes another lab namespace (e.g. the Nomad server's
hostc) to dom0. Facts and pitfalls: shared/design/xen-lab.md.

State lives under paths.lab_root()/xen: console.log (Xen's COM1, dom0's console included),
qemu.log, relays.log, the two sockets, share/ and lab.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vimprof import paths
from vimprof.errors import VimprofError
from vimprof.lab import netns
from vimprof.lab.proc import alive, tail

NETNS = "hostx"
TAP = "vx-tap"
HOST_IP = "198.18.3.1"
DOM0_IP = "198.18.3.2"
PREFIX = 25  # the tap's subnet 198.18.3.0/25; links to other namespaces use 198.18.3.128/25
LINK_BASE = "198.18.3.128"  # link i: .(128+4i)/30, ns side .(129+4i), hostx side .(130+4i)
XENSTORE_PORT = 8766
COMMAND_PORT = 8765
MEMORY_MB = 2048  # QEMU guest RAM: dom0 512 MB, the rest for domUs
BOOT_TIMEOUT_S = 150.0  # QEMU start to dom0 ready: 12-35 s observed, more on a busy host
COMMAND_TIMEOUT_S = 60.0
VP_RUN = "/usr/lib/vimprof/vp-run"  # in dom0: runs a command, prints the marker below
TEST_GUEST_CFG = "/var/lib/vimprof/testguest.cfg"  # in dom0: the PV GRUB guest's xl config
TEST_GUEST_NAME = "vp-test"
SHARE_TAG = "vimprof"  # 9p mount tag of the host share
DOM0_SHARE = "/mnt/host"  # where dom0 mounts <lab>/share (read-write)

# dom0_max_vcpus=1: an SMP dom0 boots several times slower under TCG on a busy 2-core host.
# bootscrub=false: scrubbing free RAM in the background steals the emulated CPUs.
XEN_CMDLINE = ("console=com1 com1=115200,8n1 dom0_mem=512M,max:512M dom0_max_vcpus=1 "
               "bootscrub=false noreboot")
DOM0_CMDLINE = "console=hvc0 earlyprintk=xen quiet"

# Boot stages, in order: (name, console line that ends it).
STAGES = (
    ("QEMU", "(XEN) Xen version"),
    ("Xen", "(XEN) *** Serial input to DOM0"),
    ("dom0 kernel", "vimprof-dom0: init"),
    ("dom0 daemons", "vimprof-dom0: daemons"),
    ("dom0 relays", "vimprof-dom0: ready"),
)
FATAL = re.compile(r"Panic on CPU|Hardware Dom0 crashed|Kernel panic|vimprof-dom0: FAILED.*")
MARKER = re.compile(r"^@@vimprof rc=(-?\d+) t0=(\d+) t1=(\d+)$", re.M)


@dataclass
class XenLabState:
    """What `up` started; persisted as lab.json in the lab directory."""

    lab_dir: str
    images: str
    qemu_pid: int
    relay_pids: list[int] = field(default_factory=list)
    xenstored_socket: str = ""  # for pyxs.Client(unix_socket_path=...)
    command_socket: str = ""
    console_log: str = ""
    share_dir: str = ""  # host directory dom0 sees at DOM0_SHARE (9p over virtio)
    links: dict[str, list[str]] = field(default_factory=dict)  # ns -> [ns ip, hostx ip]
    dom0_ip: str = DOM0_IP
    netns: str = NETNS
    kernel_version: str = ""
    boot_s: float = 0.0  # QEMU start to the host relays answering
    stage_s: dict[str, float] = field(default_factory=dict)  # stage name -> s after QEMU start


@dataclass
class CommandResult:
    """One command run in dom0 by `run`.

    `rc` is the command's exit status, `output` its stdout and stderr. `markers` are the
    (rc, t0, t1) triples vp-run printed, innermost first: t0/t1 are dom0 CLOCK_MONOTONIC ns
    around the command (the last one is the relay's own sh -c). `sent_ns`/`received_ns` are
    host time.time_ns() instants: request sent, reply complete.
    """

    command: str
    rc: int
    output: str
    markers: list[tuple[int, int, int]]
    sent_ns: int
    received_ns: int

    @property
    def dom0_ms(self) -> float:
        """Duration of the innermost timed command, ms (dom0's clock)."""
        _, t0, t1 = self.markers[0]
        return (t1 - t0) / 1e6


def lab_dir() -> Path:
    return paths.lab_root() / "xen"


def images_dir() -> Path:
    """The images scripts/setup-xen built ($VIMPROF_CACHE/xen/current).

    Raises VimprofError when they are missing.
    """
    d = paths.cache_root() / "xen" / "current"
    if not (d / "READY").is_file():
        raise VimprofError(f"no Xen lab images in {d}: run scripts/setup-xen")
    return d.resolve()


def images_ready() -> bool:
    """Whether scripts/setup-xen has built the images."""
    try:
        images_dir()
    except VimprofError:
        return False
    return True


def _qemu() -> str:
    q = shutil.which("qemu-system-x86_64")
    if q is None:
        raise VimprofError("qemu-system-x86_64 is missing: run scripts/setup-xen")
    return q


def _socat() -> str:
    s = shutil.which("socat")
    if s is None:
        raise VimprofError("socat is missing: run scripts/setup-xen")
    return s


def _save(state: XenLabState) -> None:
    (Path(state.lab_dir) / "lab.json").write_text(json.dumps(asdict(state), indent=2) + "\n")


def _load_state() -> XenLabState | None:
    p = lab_dir() / "lab.json"
    try:
        return XenLabState(**json.loads(p.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _spawn(argv: list[str], log: Path) -> int:
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return proc.pid


def _qemu_argv(images: Path, console: Path, share: Path) -> list[str]:
    return [
        "ip", "netns", "exec", NETNS, _qemu(),
        "-accel", "tcg", "-cpu", "max,-smap",  # SMAP off: else dom0 crashes at once
        "-m", str(MEMORY_MB), "-smp", "2",
        "-nodefaults", "-display", "none", "-vga", "none", "-monitor", "none",
        "-serial", f"file:{console}", "-no-reboot",
        "-kernel", str(images / "xen"), "-append", XEN_CMDLINE,
        # QEMU's multiboot loader: modules comma-separated, each with its command line
        "-initrd", (f"{images / 'vmlinux'} {DOM0_CMDLINE} vimprof.ip={DOM0_IP}/{PREFIX} "
                    f"vimprof.xsport={XENSTORE_PORT} vimprof.cmdport={COMMAND_PORT},"
                    f"{images / 'dom0.cpio'}"),
        "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no",
        "-device", "e1000,netdev=n0",
        "-virtfs", f"local,path={share},mount_tag={SHARE_TAG},security_model=none,id=share",
    ]


def run(command: str, timeout_s: float = COMMAND_TIMEOUT_S, state: XenLabState | None = None,
        check: bool = False) -> CommandResult:
    """Run one shell command line in dom0 (busybox sh, PATH has xl and the xenstore tools).

    Returns a CommandResult. Raises VimprofError when the lab is not running, the relay does not
    answer within `timeout_s` or closes without a result (dom0 not reachable), the command has a
    newline, or `check` is set and the command exits non-zero.
    """
    if "\n" in command:
        raise VimprofError("a dom0 command is one line: join commands with ';'")
    state = state or _load_state()
    if state is None:
        raise VimprofError("the Xen lab is not running: `vimprof lab up xen`")
    sent = time.time_ns()
    chunks: list[bytes] = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(state.command_socket)
            s.sendall(command.encode() + b"\n")
            deadline = time.monotonic() + timeout_s
            while True:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
    except TimeoutError:
        raise VimprofError(f"dom0 did not answer `{command}` within {timeout_s:.0f} s "
                           f"(console: {state.console_log})") from None
    except OSError as exc:
        raise VimprofError(f"cannot reach dom0's command relay ({state.command_socket}): {exc}; "
                           "is the Xen lab up? `vimprof lab status xen`") from None
    received = time.time_ns()
    text = b"".join(chunks).decode(errors="replace")
    markers = [(int(m[1]), int(m[2]), int(m[3])) for m in MARKER.finditer(text)]
    if not markers:
        raise VimprofError(f"dom0's command relay closed without a result for `{command}` "
                           f"(dom0 not reachable?); console: {state.console_log}")
    output = MARKER.sub("", text)
    output = re.sub(r"\n+$", "\n", output).lstrip("\n") if output.strip() else ""
    result = CommandResult(command, markers[-1][0], output, markers, sent, received)
    if check and result.rc != 0:
        raise VimprofError(f"`{command}` failed in dom0 (exit {result.rc}): "
                           f"{output.strip()[-800:]}")
    return result


def put_file(dest: str, data: bytes, mode: int = 0o644, state: XenLabState | None = None,
             chunk: int = 48 * 1024) -> None:
    """Write `data` to the absolute path `dest` in dom0 (its directory is created; dom0's
    root is a tmpfs-backed initramfs: the file lives until `down`). Sent base64-encoded
    through the command relay, `chunk` bytes per command: meant for configs and small images.

    Raises VimprofError like `run`, or when `dest` is not a plain absolute path.
    """
    import base64
    import shlex

    if not dest.startswith("/") or not re.fullmatch(r"[\w./+-]+", dest):
        raise VimprofError(f"dom0 path must be absolute and plain, not {dest!r}")
    q = shlex.quote(dest)
    run(f"mkdir -p $(dirname {q}) && : > {q}.part", state=state, check=True)
    for i in range(0, len(data), chunk):
        b64 = base64.b64encode(data[i:i + chunk]).decode()
        run(f"echo {b64} | base64 -d >> {q}.part", state=state, check=True)
    run(f"chmod {mode:o} {q}.part && mv {q}.part {q}", state=state, check=True)


def start_daemon(command: str, log: str, state: XenLabState | None = None) -> int:
    """Start a long-running shell `command` in dom0, detached (its own session, stdin
    /dev/null, stdout and stderr appended to the dom0 path `log`, e.g. under DOM0_SHARE to
    read it on the host). Returns its dom0 pid; stop it with `run(f"kill {pid}")`.

    Raises VimprofError like `run`, or when the process is gone right after starting.
    """
    import shlex

    res = run(f"setsid sh -c {shlex.quote(command)} </dev/null >>{shlex.quote(log)} 2>&1 & "
              "echo $!", state=state, check=True)
    pid = int(res.output.split()[-1])
    if run(f"kill -0 {pid}", state=state).rc != 0:
        raise VimprofError(f"`{command}` exited at once in dom0; see {log} there")
    return pid


def start_nomad_client(nomad: str | Path, servers: list[str], name: str = "xen-dom0",
                       extra_hcl: str = "", state: XenLabState | None = None) -> int:
    """Run a Nomad client agent in dom0 (Nomad on Xen: the paper's HostL) and return its pid.

    `nomad` (a host path) is copied into the share and run from DOM0_SHARE; `servers` are
    "ip:port" RPC addresses, reachable once `link_namespace` routed the server's namespace
    (e.g. `link_namespace("hostc", routes=["198.18.0.0/24"])`). `extra_hcl` is appended to
    the agent config (a `plugin` block, `plugin_dir = "/mnt/host/plugins"`, ...). Data lives
    in dom0's /tmp/nomad (a tmpfs: Nomad's disk fingerprint needs a real mount), the log is
    <share>/nomad-client.log. Registration takes ~20 s under TCG; poll the server's
    /v1/nodes for `name`. Raises VimprofError like `start_daemon`.
    """
    state = state or current()
    if state is None:
        raise VimprofError("the Xen lab is not running: `vimprof lab up xen`")
    share = Path(state.share_dir)
    src, dst = Path(nomad), share / "nomad"
    if not (dst.exists() and dst.stat().st_size == src.stat().st_size
            and dst.stat().st_mtime == src.stat().st_mtime):
        shutil.copy2(src, dst)
    server_list = ", ".join(f'"{s}"' for s in servers)
    (share / "nomad-client.hcl").write_text(f"""
name = "{name}"
data_dir = "/tmp/nomad"
bind_addr = "{DOM0_IP}"
log_level = "INFO"
disable_update_check = true
client {{
  enabled = true
  servers = [{server_list}]
  network_interface = "eth0"
  options = {{
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }}
  # v1.6 sandboxes the artifact getter with Landlock, which dom0's kernel lacks ("landlock
  # failed to lock"): the stock driver's artifact download would fail every run.
  artifact {{
    disable_filesystem_isolation = true
  }}
}}
consul {{
  auto_advertise   = false
  server_auto_join = false
  client_auto_join = false
}}
{extra_hcl}
""")
    return start_daemon(f"{DOM0_SHARE}/nomad agent -config={DOM0_SHARE}/nomad-client.hcl",
                        f"{DOM0_SHARE}/nomad-client.log", state=state)


def link_namespace(ns: str, routes: list[str] | tuple[str, ...] = (),
                   state: XenLabState | None = None) -> tuple[str, str]:
    """Route between network namespace `ns` (which must exist) and dom0, through hostx.

    Adds a veth pair (vx-<ns> at both ends, a /30 from 198.18.3.128/25), lets hostx forward,
    gives `ns` a route to dom0's subnet (198.18.3.0/25) and gives hostx and dom0 routes to each
    CIDR of `routes` (addresses in or behind `ns`, e.g. the Nomad server's 198.18.0.0/24) via
    `ns`. Idempotent; links go with the lab (`down`). Returns (ns-side ip, hostx-side ip).
    Raises VimprofError when the lab is not running, `ns` does not exist or ip fails.
    """
    import ipaddress

    state = state or current()
    if state is None:
        raise VimprofError("the Xen lab is not running: `vimprof lab up xen`")
    if not netns.exists(ns):
        raise VimprofError(f"network namespace {ns} does not exist")
    dev = f"vx-{ns}"[:15]
    if ns in state.links:
        ns_ip, x_ip = state.links[ns]
        if netns.ip("-n", ns, "link", "show", dev, check=False).returncode != 0:
            # `ns` was recreated (e.g. the Nomad lab restarted): the veth went with it
            netns.ip("-n", NETNS, "link", "del", dev, check=False)
            netns.veth(ns, dev, f"{ns_ip}/30", NETNS, dev, f"{x_ip}/30")
    else:
        base = ipaddress.IPv4Address(LINK_BASE) + 4 * len(state.links)
        if base > ipaddress.IPv4Address("198.18.3.252"):
            raise VimprofError("too many namespaces linked to the Xen lab (at most 32)")
        ns_ip, x_ip = str(base + 1), str(base + 2)
        netns.veth(ns, dev, f"{ns_ip}/30", NETNS, dev, f"{x_ip}/30")
        state.links[ns] = [ns_ip, x_ip]
        _save(state)
    subprocess.run(["ip", "netns", "exec", NETNS, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                   check=True, capture_output=True)
    netns.ip("-n", ns, "route", "replace", f"{DOM0_IP.rsplit('.', 1)[0]}.0/{PREFIX}",
             "via", x_ip)
    for cidr in routes:
        netns.ip("-n", NETNS, "route", "replace", cidr, "via", ns_ip)
        run(f"ip route replace {cidr} via {HOST_IP}", state=state, check=True)
    link = f"{LINK_BASE.rsplit('.', 1)[0]}.128/{PREFIX}"
    run(f"ip route replace {link} via {HOST_IP}", state=state, check=True)
    return ns_ip, x_ip


def _probe_xenstore(sock: str, timeout_s: float) -> str:
    """Read /local/domain/0/name through pyxs; a thread bounds pyxs' unbounded waits."""
    from pyxs import Client

    box: dict[str, Any] = {}

    def go() -> None:
        try:
            with Client(unix_socket_path=sock) as c:
                box["name"] = c.read(b"/local/domain/0/name").decode()
        except Exception as exc:  # noqa: BLE001 - reported to the caller below
            box["error"] = exc

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout_s)
    if "name" in box:
        return box["name"]
    raise VimprofError(f"xenstored did not answer through {sock}: "
                       f"{box.get('error', f'no reply in {timeout_s:.0f} s')}")


def up(timeout_s: float = BOOT_TIMEOUT_S) -> XenLabState:
    """Bring the Xen lab up (idempotent: a running, answering lab is returned as it is).

    Boots QEMU (TCG) with Xen and dom0 in namespace hostx, waits for dom0's relays, starts the
    host-side socat relays and checks both (a command and a pyxs read). Returns the state.
    Raises VimprofError when not root, scripts/setup-xen has not run, or the lab is not ready
    within `timeout_s` s; the message names the stage that did not finish (QEMU, Xen,
    dom0 kernel, dom0 daemons, dom0 relays, host relays) with the console's last lines, and
    the lab is torn down first.
    """
    netns.require_root()
    images = images_dir()
    _qemu()
    socat = _socat()
    state = _load_state()
    if state and _running(state):
        try:
            if run("true", timeout_s=10, state=state).rc == 0:
                return state
        except VimprofError:
            pass
    down()

    d = lab_dir()
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    console, qlog = d / "console.log", d / "qemu.log"
    console.touch()
    (d / "share").mkdir()
    manifest = json.loads((images / "manifest.json").read_text())
    state = XenLabState(lab_dir=str(d), images=str(images), qemu_pid=0,
                        xenstored_socket=str(d / "xenstored.sock"),
                        command_socket=str(d / "command.sock"), console_log=str(console),
                        share_dir=str(d / "share"),
                        kernel_version=manifest.get("kernel_version", ""))
    stage = "QEMU"
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    try:
        netns.create(NETNS)
        netns.ip("-n", NETNS, "tuntap", "add", "dev", TAP, "mode", "tap")
        netns.ip("-n", NETNS, "addr", "add", f"{HOST_IP}/{PREFIX}", "dev", TAP)
        netns.ip("-n", NETNS, "link", "set", TAP, "up")
        state.qemu_pid = _spawn(_qemu_argv(images, console, Path(state.share_dir)), qlog)
        _save(state)
        pending = list(STAGES)
        while pending:
            if not alive(state.qemu_pid):
                raise VimprofError(f"QEMU exited: {tail(qlog, 5) or 'no message'}")
            text = console.read_text(errors="replace")
            bad = FATAL.search(text)
            if bad:
                raise VimprofError(f"fatal console line: {bad.group(0)}")
            while pending and pending[0][1] in text:
                state.stage_s[pending[0][0]] = round(time.monotonic() - t0, 2)
                pending.pop(0)
            if not pending:
                break
            stage = pending[0][0]
            if time.monotonic() > deadline:
                raise VimprofError(f"no progress within {timeout_s:.0f} s")
            time.sleep(0.1)

        stage = "host relays"
        for sock, port in ((state.command_socket, COMMAND_PORT),
                           (state.xenstored_socket, XENSTORE_PORT)):
            state.relay_pids.append(_spawn(
                ["ip", "netns", "exec", NETNS, socat,
                 f"UNIX-LISTEN:{sock},fork,unlink-early,mode=600",
                 f"TCP:{DOM0_IP}:{port},connect-timeout=5"], d / "relays.log"))
        _save(state)
        while not (Path(state.command_socket).exists() and Path(state.xenstored_socket).exists()):
            if time.monotonic() > deadline:
                raise VimprofError("the host-side socat relays did not start")
            time.sleep(0.05)
        while True:  # dom0 printed "ready" once its relays listen; the tap may lag a little
            try:
                run("true", timeout_s=max(1.0, deadline - time.monotonic()), state=state,
                    check=True)
                break
            except VimprofError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        _probe_xenstore(state.xenstored_socket, max(5.0, deadline - time.monotonic()))
        state.boot_s = round(time.monotonic() - t0, 2)
        state.stage_s["host relays"] = state.boot_s
        _save(state)
    except BaseException as exc:
        last = tail(console, 25)
        down()
        if isinstance(exc, VimprofError):
            raise VimprofError(
                f"the Xen lab did not come up: stage '{stage}' failed after "
                f"{time.monotonic() - t0:.1f} s: {exc}\n--- console (last lines)\n{last}"
            ) from None
        raise
    return state


def down() -> list[str]:
    """Stop the lab: QEMU (Xen, dom0 and every domU with it), the relays, namespace hostx
    (and the links to it), the sockets, share/ and lab.json; the logs stay. Idempotent;
    returns what was cleaned up, for the CLI."""
    netns.require_root()
    done: list[str] = []
    state = _load_state()
    # QEMU and the relays all live in hostx: SIGTERM them there, SIGKILL what survives
    left = netns.kill_all(NETNS)
    for pid in left:
        what = "QEMU" if state and pid == state.qemu_pid else "process"
        done.append(f"stopped {what} (pid {pid}) in {NETNS}")
    end = time.monotonic() + 5.0
    for pid in left:  # reap our own children (a lab brought up by this process)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() < end:
                time.sleep(0.02)
    if netns.exists(NETNS):
        netns.delete(NETNS)
        done.append(f"deleted namespace {NETNS}")
    d = lab_dir()
    if (d / "share").is_dir():  # dom0's view of it is gone; it may hold a Nomad binary
        shutil.rmtree(d / "share", ignore_errors=True)
    for name in ("xenstored.sock", "command.sock", "lab.json"):
        p = d / name
        if p.exists() or p.is_symlink():
            p.unlink()
            if name != "lab.json":
                done.append(f"removed {p}")
    return done


def _running(state: XenLabState) -> bool:
    """QEMU of `state` still runs (in hostx: a reused pid elsewhere does not count)."""
    return alive(state.qemu_pid) and state.qemu_pid in netns.pids(NETNS)


def current() -> XenLabState | None:
    """The running lab's state (QEMU alive), or None."""
    state = _load_state()
    return state if state and _running(state) else None


def status() -> dict[str, object]:
    """A snapshot: namespace, QEMU, whether dom0 answers, its domains (`xl list`)."""
    state = _load_state()
    info: dict[str, object] = {
        "lab_dir": str(lab_dir()),
        "images": str(images_dir()) if images_ready() else "not built (run scripts/setup-xen)",
        "namespace": netns.exists(NETNS),
        "running": False,
    }
    if not state:
        return info
    info.update(qemu_alive=_running(state), dom0_ip=state.dom0_ip, links=state.links,
                share=f"{state.share_dir} (dom0: {DOM0_SHARE})",
                xenstored_socket=state.xenstored_socket, command_socket=state.command_socket,
                boot_s=state.boot_s, console=state.console_log)
    if info["qemu_alive"]:
        try:
            res = run("xl list", timeout_s=20, state=state, check=True)
            info["domains"] = [line.split()[0] for line in res.output.splitlines()[1:] if line]
            info["running"] = True
        except VimprofError as exc:
            info["error"] = str(exc)
    return info
