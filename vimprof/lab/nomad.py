"""The embedded Nomad lab: the paper's two-host topology on one machine.

    root namespace (pusher, vimprof)          hostc (VIM core)            hostl (VIM local)
    vp-mgmt 198.18.1.1/30  ---- veth ----  vp-mgmt 198.18.1.2/30
                                           vp-data 198.18.0.1/24 -- veth -- vp-data 198.18.0.2/24
                                           nomad server (HTTP 4646,        nomad client + qemu
                                           RPC 4647)                       guests

All server-client RPC crosses the hostc-hostl veth; the pusher's HTTP API requests cross the
management veth. Both end in hostc, where the capture runs. Addresses are from 198.18.0.0/15
(RFC 2544); no namespace has a default route. Ventre et al. 2016, Sec. V: HostC runs the VIM core
components, HostL the local ones.

State lives under one lab directory (vimprof.paths.lab_root()/nomad): agent configs, data dirs,
logs, pid files and lab.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from vimprof import paths
from vimprof.errors import VimprofError
from vimprof.lab import netns
from vimprof.lab.proc import alive, tail

SERVER_NS = "hostc"
CLIENT_NS = "hostl"
MGMT_HOST_IP = "198.18.1.1"
SERVER_MGMT_IP = "198.18.1.2"
SERVER_IP = "198.18.0.1"
CLIENT_IP = "198.18.0.2"
HTTP_PORT = 4646
RPC_PORT = 4647
SERF_PORT = 4648
ARTIFACT_PORT = 8080  # the lab's artifact server (hostc), for the stock driver's downloads
CAPTURE_FILTER = f"tcp port {HTTP_PORT} or tcp port {RPC_PORT} or tcp port {ARTIFACT_PORT}"
VARIANTS = ("stock", "tuned")
PLUGIN_FILE = "nomad-driver-xen"  # the plugin block names the file in plugin_dir
READY_TIMEOUT_S = 90.0

# Fingerprinters that would probe cloud metadata services (unreachable here: no default route).
FINGERPRINT_DENYLIST = "env_aws,env_gce,env_azure,env_digitalocean"


@dataclass
class LabState:
    """What `lab up` started; persisted as lab.json in the lab directory."""

    lab_dir: str
    nomad: str
    nomad_version: str
    kernel: str
    accelerator: str
    server_pid: int
    client_pid: int
    http_addr: str
    capture_netns: str = SERVER_NS
    capture_iface: str = "any"
    nomad_variant: str = "stock"  # "tuned": Nomad with the reactive patch (patches/nomad-xen/)
    driver_variant: str | None = None  # the xen plugin's variant; None: plugin not installed
    hooks_file: str = ""  # where the xen plugin appends its timestamp hooks
    artifact_url: str = ""  # base URL of the artifact server (the lab's image directory)
    artifact_pid: int = 0


def lab_dir() -> Path:
    return paths.lab_root() / "nomad"


def _server_hcl(data_dir: Path) -> str:
    return f"""
name = "hostc"
data_dir = "{data_dir}"
bind_addr = "0.0.0.0"
log_level = "INFO"
disable_update_check = true
advertise {{
  http = "{SERVER_MGMT_IP}"
  rpc  = "{SERVER_IP}"
  serf = "{SERVER_IP}"
}}
server {{
  enabled          = true
  bootstrap_expect = 1
}}
client {{
  enabled = false
}}
consul {{
  auto_advertise   = false
  server_auto_join = false
  client_auto_join = false
}}
"""


def _plugin_hcl(image_dir: Path, variant: str, accelerator: str, hooks_file: Path) -> str:
    """The micro-VNF driver plugin's block (patches/nomad-xen/README.md)."""
    return f"""
plugin "{PLUGIN_FILE}" {{
  config {{
    image_dirs = ["{image_dir}"]
    variant    = "{variant}"
    hooks_file = "{hooks_file}"
    qemu {{
      accelerator = "{accelerator}"
    }}
  }}
}}
"""


def _client_hcl(data_dir: Path, image_dir: Path, plugin_dir: Path | None = None,
                plugin: str = "") -> str:
    plugin_dir_line = f'plugin_dir = "{plugin_dir}"' if plugin_dir else ""
    return f"""{plugin_dir_line}
name = "hostl"
data_dir = "{data_dir}"
bind_addr = "{CLIENT_IP}"
log_level = "INFO"
disable_update_check = true
client {{
  enabled = true
  servers = ["{SERVER_IP}:{RPC_PORT}"]
  network_interface = "vp-data"  # no default route in hostl, by design
  options = {{
    "fingerprint.denylist" = "{FINGERPRINT_DENYLIST}"
  }}
}}
consul {{
  auto_advertise   = false
  server_auto_join = false
  client_auto_join = false
}}
plugin "qemu" {{
  config {{
    image_paths = ["{image_dir}"]
  }}
}}
{plugin}"""


def _save(state: LabState) -> None:
    (Path(state.lab_dir) / "lab.json").write_text(json.dumps(asdict(state), indent=2) + "\n")


def _load_state() -> LabState | None:
    p = lab_dir() / "lab.json"
    if not p.exists():
        return None
    return LabState(**json.loads(p.read_text()))


def start_agent(ns: str, nomad: Path, config: Path, log: Path) -> int:
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, str(nomad), "agent", f"-config={config}"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal must not kill the lab mid-campaign
        )
    return proc.pid


def _nomad_version(nomad: Path) -> str:
    out = subprocess.run([str(nomad), "version"], capture_output=True, text=True).stdout
    return out.splitlines()[0].strip() if out else "unknown"


def _wait(state: LabState, what: str, ready, logs: Path, deadline: float) -> None:
    """Poll `ready(session)` until true; raise VimprofError when an agent exits or at deadline.

    `deadline` is a time.monotonic() instant.
    """
    session = requests.Session()
    while time.monotonic() < deadline:
        for name, pid in (("server", state.server_pid), ("client", state.client_pid)):
            if pid and not alive(pid):
                raise VimprofError(f"the Nomad {name} exited while starting; "
                                   f"see {logs / (name + '.log')}")
        try:
            if ready(session):
                return
        except (requests.RequestException, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise VimprofError(
        f"the Nomad lab did not become ready (waiting for: {what}) within "
        f"{READY_TIMEOUT_S:.0f} s; see the logs in {logs}, then `vimprof lab down nomad`"
    )


def _server_ready(http_addr: str):
    """A leader is elected and the keyring is initialized (a client registering earlier is
    refused with "keyring has not been initialized yet" and retries only ~20 s later)."""

    def ready(session: requests.Session) -> bool:
        leader = session.get(f"{http_addr}/v1/status/leader", timeout=2)
        if not (leader.ok and leader.json()):
            return False
        keys = session.get(f"{http_addr}/v1/operator/keyring/keys", timeout=2)
        return keys.ok and bool(keys.json())

    return ready


def _node_ready(http_addr: str, drivers: tuple[str, ...]):
    """Node hostl is ready and each of `drivers` detected and healthy."""

    def ready(session: requests.Session) -> bool:
        for n in session.get(f"{http_addr}/v1/nodes", timeout=2).json():
            found = n.get("Drivers") or {}
            healthy = all(
                (found.get(d) or {}).get("Detected") and (found.get(d) or {}).get("Healthy")
                for d in drivers
            )
            if n.get("Status") == "ready" and healthy:
                return True
        return False

    return ready


def _plugin() -> Path | None:
    """The built micro-VNF driver plugin, or None when scripts/setup has not built it."""
    try:
        return paths.driver_plugin()
    except VimprofError:
        return None


def _start_artifact_server(images: Path, log: Path) -> int:
    """A plain HTTP server in hostc serving the lab's images (the stock driver's artifacts)."""
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", SERVER_NS, sys.executable, "-m", "http.server",
             str(ARTIFACT_PORT), "--bind", SERVER_IP, "--directory", str(images)],
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc.pid


def up(accelerator: str = "auto", nomad_variant: str = "stock",
       driver_variant: str = "stock") -> LabState:
    """Bring the lab up (idempotent: a healthy running lab of the same variants is returned).

    `accelerator` is 'tcg', 'kvm' or 'auto' (measured by vimprof.lab.accel, cached).
    `nomad_variant` 'stock' runs Nomad v1.11.3 as released, 'tuned' the reactive build
    (patches/nomad-xen/nomad-reactive.patch). `driver_variant` ('stock'|'tuned') configures the
    micro-VNF driver plugin when scripts/setup built it. A running lab of other variants is
    restarted. Raises VimprofError when not root, a build or the kernel is missing, a variant
    is unknown, or the lab does not become ready in READY_TIMEOUT_S (it is then torn down).
    """
    netns.require_root()
    for what, v in (("--nomad", nomad_variant), ("driver variant", driver_variant)):
        if v not in VARIANTS:
            raise VimprofError(f"{what} must be one of {', '.join(VARIANTS)}, not {v!r}")
    plugin = _plugin()
    state = _load_state()
    same = state is not None and state.nomad_variant == nomad_variant and (
        plugin is None or state.driver_variant == driver_variant)
    if same and alive(state.server_pid) and alive(state.client_pid):
        return state
    if state or netns.exists(SERVER_NS) or netns.exists(CLIENT_NS):
        down()

    nomad = paths.nomad_reactive_binary() if nomad_variant == "tuned" else paths.nomad_binary()
    kernel = paths.testvnf_kernel()
    d = lab_dir()
    if d.exists():
        shutil.rmtree(d)
    images, logs = d / "images", d / "logs"
    for sub in (images, logs, d / "server", d / "client"):
        sub.mkdir(parents=True, exist_ok=True)
    lab_kernel = images / kernel.name
    shutil.copy2(kernel, lab_kernel)
    hooks_file = d / "hooks.jsonl"
    plugin_dir = d / "plugins" if plugin else None
    if plugin_dir:
        plugin_dir.mkdir()
        shutil.copy2(plugin, plugin_dir / PLUGIN_FILE)

    if accelerator == "auto":
        from vimprof.lab.accel import choose_accelerator

        accelerator = choose_accelerator(lab_kernel).accel

    try:
        netns.create(SERVER_NS)
        netns.create(CLIENT_NS)
        netns.veth(None, "vp-mgmt", f"{MGMT_HOST_IP}/30", SERVER_NS, "vp-mgmt",
                   f"{SERVER_MGMT_IP}/30")
        netns.veth(SERVER_NS, "vp-data", f"{SERVER_IP}/24", CLIENT_NS, "vp-data",
                   f"{CLIENT_IP}/24")
        server_cfg = d / "server" / "server.hcl"
        client_cfg = d / "client" / "client.hcl"
        server_cfg.write_text(_server_hcl(d / "server" / "data"))
        plugin_block = (_plugin_hcl(images, driver_variant, accelerator, hooks_file)
                        if plugin else "")
        client_cfg.write_text(_client_hcl(d / "client" / "data", images, plugin_dir,
                                          plugin_block))
        deadline = time.monotonic() + READY_TIMEOUT_S
        state = LabState(
            lab_dir=str(d),
            nomad=str(nomad),
            nomad_version=_nomad_version(nomad),
            kernel=str(lab_kernel),
            accelerator=accelerator,
            server_pid=start_agent(SERVER_NS, nomad, server_cfg, logs / "server.log"),
            client_pid=0,
            http_addr=f"http://{SERVER_MGMT_IP}:{HTTP_PORT}",
            nomad_variant=nomad_variant,
            driver_variant=driver_variant if plugin else None,
            hooks_file=str(hooks_file),
            artifact_url=f"http://{SERVER_IP}:{ARTIFACT_PORT}",
            artifact_pid=_start_artifact_server(images, logs / "artifacts.log"),
        )
        _save(state)
        _wait(state, "leader and keyring", _server_ready(state.http_addr), logs, deadline)
        state.client_pid = start_agent(CLIENT_NS, nomad, client_cfg, logs / "client.log")
        _save(state)
        drivers = ("qemu", "xen") if plugin else ("qemu",)
        _wait(state, f"node hostl ready with driver(s) {', '.join(drivers)}",
              _node_ready(state.http_addr, drivers), logs, deadline)
    except BaseException as exc:
        detail = "\n".join(
            f"--- {log.name} (last lines)\n{tail(log)}" for log in sorted(logs.glob("*.log"))
        )
        down()
        if isinstance(exc, VimprofError) and detail:
            raise VimprofError(f"{exc}\n{detail}") from None
        raise
    return state


def stop_agent(pid: int, grace_s: float) -> None:
    """SIGINT (Nomad leaves cleanly and destroys its allocations), then SIGKILL."""
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not alive(pid):
                return
            time.sleep(0.05)


def down() -> list[str]:
    """Stop the lab: agents, every guest and process left in the namespaces, the namespaces.

    Idempotent. Returns what was cleaned up, for the CLI to show.
    """
    netns.require_root()
    done: list[str] = []
    state = _load_state()
    if state:
        for name, pid in (("nomad client", state.client_pid), ("nomad server", state.server_pid),
                          ("artifact server", state.artifact_pid)):
            if pid and alive(pid):
                stop_agent(pid, grace_s=10.0)
                done.append(f"stopped {name} (pid {pid})")
    for ns in (CLIENT_NS, SERVER_NS):
        left = netns.kill_all(ns)
        if left:
            done.append(f"killed {len(left)} process(es) left in {ns}")
        if netns.exists(ns):
            netns.delete(ns)
            done.append(f"deleted namespace {ns}")
    if netns.ip("link", "show", "vp-mgmt", check=False).returncode == 0:
        netns.ip("link", "del", "vp-mgmt", check=False)
    if state:
        (lab_dir() / "lab.json").unlink(missing_ok=True)
    return done


def status() -> dict[str, object]:
    """A snapshot of the lab: namespaces, agent processes, leader, node, qemu guests."""
    state = _load_state()
    info: dict[str, object] = {
        "lab_dir": str(lab_dir()),
        "namespaces": {ns: netns.exists(ns) for ns in (SERVER_NS, CLIENT_NS)},
        "running": False,
    }
    if not state:
        return info
    info.update(
        nomad_version=state.nomad_version,
        nomad_variant=state.nomad_variant,
        driver_plugin=state.driver_variant or "not built (run scripts/setup)",
        accelerator=state.accelerator,
        http_addr=state.http_addr,
        server_alive=alive(state.server_pid),
        client_alive=alive(state.client_pid),
    )
    try:
        info["leader"] = requests.get(f"{state.http_addr}/v1/status/leader", timeout=2).json()
        nodes = requests.get(f"{state.http_addr}/v1/nodes", timeout=2).json()
        info["nodes"] = {n["Name"]: n["Status"] for n in nodes}
        info["running"] = bool(info["leader"]) and info["server_alive"] and info["client_alive"]
    except (requests.RequestException, ValueError) as exc:
        info["error"] = str(exc)
    info["guests"] = len(guest_pids())
    return info


def current() -> LabState | None:
    """The running lab's state, or None when no healthy lab runs."""
    state = _load_state()
    if state and alive(state.server_pid) and alive(state.client_pid):
        return state
    return None


def guest_pids() -> list[int]:
    """PIDs of QEMU guests running in hostl."""
    found = []
    for pid in netns.pids(CLIENT_NS):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if os.path.basename(exe).startswith("qemu-system"):
            found.append(pid)
    return found
