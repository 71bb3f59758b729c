"""A Nomad cluster as users run one: ACLs bootstrapped and TLS on HTTP and RPC, in its own
namespaces, for campaigns through `--nomad-addr` (none of the embedded lab's shortcuts).

    root namespace (vimprof)          nomad-s (server)                nomad-c (client)
    vk-mgmt 198.18.5.1/30 -- veth -- vk-mgmt 198.18.5.2/30
                                     vk-data 198.18.6.1/24 -- veth -- vk-data 198.18.6.2/24
                                     HTTPS 4646, RPC 4647 (TLS)       qemu guests

Certificates come from Nomad's own `nomad tls ca create` / `nomad tls cert create` (a CA, a
server certificate with the two addresses, a client and a CLI certificate); the HTTP API does
not ask for client certificates (verify_https_client = false), RPC is mutual TLS between the
agents. ACLs: the management token from /v1/acl/bootstrap, a policy `vimprof-campaign`
(namespace default: submit-job, read-job, list-jobs, parse-job; agent: read) with a client
token for campaigns, and a policy `vimprof-readonly` (read-job, list-jobs) with a token that
lacks submit-job. Tokens are kept in the lab directory's cluster.json (mode 0600).
Addresses are from 198.18.0.0/15 (RFC 2544); no namespace has a default route.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from vimprof import paths
from vimprof.errors import VimprofError
from vimprof.lab import netns
from vimprof.lab.nomad import FINGERPRINT_DENYLIST, start_agent, stop_agent
from vimprof.lab.proc import alive, tail
from vimprof.pushers.nomad_access import ClusterAccess

SERVER_NS, CLIENT_NS = "nomad-s", "nomad-c"
MGMT_HOST_IP, SERVER_MGMT_IP = "198.18.5.1", "198.18.5.2"
SERVER_IP, CLIENT_IP = "198.18.6.1", "198.18.6.2"
MGMT_IF, DATA_IF = "vk-mgmt", "vk-data"
READY_TIMEOUT_S = 90.0
CAMPAIGN_POLICY = """
namespace "default" {
  capabilities = ["submit-job", "read-job", "list-jobs", "parse-job"]
}
agent {
  policy = "read"
}
"""
READONLY_POLICY = """
namespace "default" {
  capabilities = ["read-job", "list-jobs"]
}
"""


@dataclass
class ClusterState:
    """What `up` started; cluster.json in the lab directory (it holds tokens: mode 0600)."""

    lab_dir: str
    nomad_version: str
    http_addr: str  # https://198.18.5.2:4646
    ca_cert: str
    kernel: str  # the test micro-VNF, inside the client's image_paths
    server_pid: int
    client_pid: int = 0
    management_token: str = ""
    campaign_token: str = ""
    readonly_token: str = ""


def lab_dir() -> Path:
    return paths.lab_root() / "nomad-cluster"


def _tls_hcl(d: Path, role: str) -> str:
    return f"""
tls {{
  http = true
  rpc  = true
  ca_file   = "{d / 'nomad-agent-ca.pem'}"
  cert_file = "{d / f'global-{role}-nomad.pem'}"
  key_file  = "{d / f'global-{role}-nomad-key.pem'}"
  verify_server_hostname = true
  verify_https_client    = false
}}
acl {{
  enabled = true
}}
consul {{
  auto_advertise   = false
  server_auto_join = false
  client_auto_join = false
}}
disable_update_check = true
log_level = "INFO"
"""


def _server_hcl(d: Path) -> str:
    return f"""
name = "nomad-s"
data_dir = "{d / 'server' / 'data'}"
bind_addr = "0.0.0.0"
advertise {{
  http = "{SERVER_MGMT_IP}"
  rpc  = "{SERVER_IP}"
  serf = "{SERVER_IP}"
}}
server {{
  enabled          = true
  bootstrap_expect = 1
}}
""" + _tls_hcl(d / "tls", "server")


def _client_hcl(d: Path, images: Path) -> str:
    return f"""
name = "nomad-c"
data_dir = "{d / 'client' / 'data'}"
bind_addr = "{CLIENT_IP}"
client {{
  enabled = true
  servers = ["{SERVER_IP}:4647"]
  network_interface = "{DATA_IF}"
  options = {{
    "fingerprint.denylist" = "{FINGERPRINT_DENYLIST}"
  }}
}}
plugin "qemu" {{
  config {{
    image_paths = ["{images}"]
  }}
}}
""" + _tls_hcl(d / "tls", "client")


def _certificates(nomad: Path, tls: Path) -> None:
    """CA, server (both addresses), client and CLI certificates, by Nomad's own `nomad tls`."""
    tls.mkdir(parents=True)
    for args in (["ca", "create"],
                 ["cert", "create", "-server", "-region", "global",
                  "-additional-ipaddress", SERVER_MGMT_IP, "-additional-ipaddress", SERVER_IP],
                 ["cert", "create", "-client"], ["cert", "create", "-cli"]):
        res = subprocess.run([str(nomad), "tls", *args], cwd=tls, capture_output=True,
                             text=True)
        if res.returncode != 0:
            raise VimprofError(f"`nomad tls {' '.join(args)}` failed: {res.stderr.strip()}")


def up() -> ClusterState:
    """Bring the cluster up (a running one is returned as it is). Raises VimprofError when not
    root, Nomad is not built, or it does not become ready in READY_TIMEOUT_S (torn down)."""
    netns.require_root()
    state = current()
    if state is not None:
        return state
    down()
    nomad = paths.nomad_binary()
    d = lab_dir()
    if d.exists():
        shutil.rmtree(d)
    images, logs = d / "images", d / "logs"
    for sub in (images, logs, d / "server", d / "client"):
        sub.mkdir(parents=True)
    kernel = images / paths.testvnf_kernel().name
    shutil.copy2(paths.testvnf_kernel(), kernel)
    try:
        _certificates(nomad, d / "tls")
        netns.create(SERVER_NS)
        netns.create(CLIENT_NS)
        netns.veth(None, MGMT_IF, f"{MGMT_HOST_IP}/30", SERVER_NS, MGMT_IF,
                   f"{SERVER_MGMT_IP}/30")
        netns.veth(SERVER_NS, DATA_IF, f"{SERVER_IP}/24", CLIENT_NS, DATA_IF, f"{CLIENT_IP}/24")
        (d / "server" / "server.hcl").write_text(_server_hcl(d))
        (d / "client" / "client.hcl").write_text(_client_hcl(d, images))
        version = subprocess.run([str(nomad), "version"], capture_output=True,
                                 text=True).stdout.splitlines()[0].strip()
        state = ClusterState(
            lab_dir=str(d), nomad_version=version, http_addr=f"https://{SERVER_MGMT_IP}:4646",
            ca_cert=str(d / "tls" / "nomad-agent-ca.pem"), kernel=str(kernel),
            server_pid=start_agent(SERVER_NS, nomad, d / "server" / "server.hcl",
                                   logs / "server.log"))
        _save(state)
        deadline = time.monotonic() + READY_TIMEOUT_S
        s = ClusterAccess(addr=state.http_addr, ca_cert=state.ca_cert).session()
        _wait(state, "a leader", deadline, logs, lambda: s.get(
            f"{state.http_addr}/v1/status/leader", timeout=2).json())
        state.management_token = _wait(state, "ACL bootstrap", deadline, logs,
                                       lambda: _bootstrap(s, state.http_addr))
        s.headers["X-Nomad-Token"] = state.management_token
        state.campaign_token = _token(s, state.http_addr, "vimprof-campaign", CAMPAIGN_POLICY)
        state.readonly_token = _token(s, state.http_addr, "vimprof-readonly", READONLY_POLICY)
        _save(state)
        state.client_pid = start_agent(CLIENT_NS, nomad, d / "client" / "client.hcl",
                                       logs / "client.log")
        _save(state)
        _wait(state, "node nomad-c ready with the qemu driver", deadline, logs,
              lambda: _node_ready(s, state.http_addr))
    except BaseException as exc:
        detail = "\n".join(f"--- {log.name} (last lines)\n{tail(log)}"
                           for log in sorted(logs.glob("*.log")))
        down()
        if isinstance(exc, VimprofError) and detail:
            raise VimprofError(f"{exc}\n{detail}") from None
        raise
    return state


def _bootstrap(s: requests.Session, addr: str) -> str | None:
    r = s.post(f"{addr}/v1/acl/bootstrap", timeout=5)
    return r.json()["SecretID"] if r.status_code == 200 else None


def _token(s: requests.Session, addr: str, name: str, rules: str) -> str:
    """A client token with one policy `name` of `rules` (HCL); returns its SecretID."""
    r = s.post(f"{addr}/v1/acl/policy/{name}", timeout=5,
               json={"Name": name, "Description": "vimprof lab", "Rules": rules})
    if r.status_code != 200:
        raise VimprofError(f"creating ACL policy {name} failed: HTTP {r.status_code} {r.text}")
    r = s.post(f"{addr}/v1/acl/token", timeout=5,
               json={"Name": name, "Type": "client", "Policies": [name]})
    if r.status_code != 200:
        raise VimprofError(f"creating ACL token {name} failed: HTTP {r.status_code} {r.text}")
    return r.json()["SecretID"]


def _node_ready(s: requests.Session, addr: str) -> bool:
    for n in s.get(f"{addr}/v1/nodes", timeout=2).json():
        qemu = (n.get("Drivers") or {}).get("qemu") or {}
        if n.get("Status") == "ready" and qemu.get("Detected") and qemu.get("Healthy"):
            return True
    return False


def _wait(state: ClusterState, what: str, deadline: float, logs: Path, probe):
    while time.monotonic() < deadline:
        for name, pid in (("server", state.server_pid), ("client", state.client_pid)):
            if pid and not alive(pid):
                raise VimprofError(f"the Nomad {name} exited while starting; see "
                                   f"{logs / (name + '.log')}")
        try:
            got = probe()
            if got:
                return got
        except (requests.RequestException, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise VimprofError(f"the ACL+TLS Nomad cluster did not become ready (waiting for: {what})"
                       f" within {READY_TIMEOUT_S:.0f} s; see the logs in {logs}")


def _save(state: ClusterState) -> None:
    p = Path(state.lab_dir) / "cluster.json"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(asdict(state), indent=2) + "\n")


def _load() -> ClusterState | None:
    p = lab_dir() / "cluster.json"
    return ClusterState(**json.loads(p.read_text())) if p.exists() else None


def current() -> ClusterState | None:
    """The running cluster's state, or None."""
    state = _load()
    if state and state.client_pid and alive(state.server_pid) and alive(state.client_pid):
        return state
    return None


def down() -> list[str]:
    """Stop agents, guests and namespaces; idempotent. Returns what was cleaned up."""
    netns.require_root()
    done: list[str] = []
    state = _load()
    if state:
        for name, pid in (("nomad client", state.client_pid), ("nomad server", state.server_pid)):
            if pid and alive(pid):
                stop_agent(pid, grace_s=10.0)
                done.append(f"stopped {name} (pid {pid})")
    for ns in (CLIENT_NS, SERVER_NS):
        if netns.kill_all(ns):
            done.append(f"killed processes left in {ns}")
        if netns.exists(ns):
            netns.delete(ns)
            done.append(f"deleted namespace {ns}")
    if netns.ip("link", "show", MGMT_IF, check=False).returncode == 0:
        netns.ip("link", "del", MGMT_IF, check=False)
    if state:
        (lab_dir() / "cluster.json").unlink(missing_ok=True)
    return done
