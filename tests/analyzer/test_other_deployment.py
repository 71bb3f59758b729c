"""A deployment unlike the lab's: Nomad server and client on one host, both on loopback, with
their own ports (HTTP 5646, RPC 5647), profiled as a user's cluster with `--http-port` and
`--rpc-port`. Its capture (on lo, both directions of every message) analyzes to the same
phases as the two-host lab's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vimprof import paths
from vimprof.lab import netns
from vimprof.lab.nomad import start_agent, stop_agent

pytestmark = pytest.mark.lab

NS = "nomad-lo"
PHASES = {"api", "scheduling", "client_pickup", "task_start", "notification", "instantiation",
          "total", "commit", "stop"}


def _hcl(name: str, data: Path, http: int, rpc: int, serf: int, body: str) -> str:
    return f"""
name = "{name}"
data_dir = "{data}"
bind_addr = "127.0.0.1"
disable_update_check = true
advertise {{
  http = "127.0.0.1"
  rpc  = "127.0.0.1"
  serf = "127.0.0.1"
}}
ports {{
  http = {http}
  rpc  = {rpc}
  serf = {serf}
}}
consul {{
  auto_advertise   = false
  server_auto_join = false
  client_auto_join = false
}}
{body}
"""


@pytest.fixture(scope="module")
def loopback_cluster(lab_lock, tmp_path_factory):
    from labtools import lab_unavailable

    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    d = tmp_path_factory.mktemp("lo")
    kernel = d / "testvnf.elf"
    shutil.copy2(paths.testvnf_kernel(), kernel)
    (d / "server.hcl").write_text(_hcl("lo-server", d / "s", 5646, 5647, 5648,
                                       "server {\n  enabled = true\n  bootstrap_expect = 1\n}"))
    (d / "client.hcl").write_text(_hcl("lo-client", d / "c", 5656, 5657, 5658, f"""
client {{
  enabled = true
  servers = ["127.0.0.1:5647"]
  network_interface = "lo"
  options = {{
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }}
}}
plugin "qemu" {{
  config {{
    image_paths = ["{d}"]
  }}
}}"""))
    netns.delete(NS)
    netns.create(NS)
    pids = [start_agent(NS, paths.nomad_binary(), d / "server.hcl", d / "server.log")]
    pids.append(start_agent(NS, paths.nomad_binary(), d / "client.hcl", d / "client.log"))
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            out = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c",
                                  "import urllib.request as u; print(u.urlopen("
                                  "'http://127.0.0.1:5646/v1/nodes', timeout=2).read().decode())"],
                                 capture_output=True, text=True).stdout
            try:
                if any(n["Status"] == "ready" and (n.get("Drivers") or {}).get("qemu", {})
                       .get("Healthy") for n in json.loads(out or "[]")):
                    break
            except ValueError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the loopback cluster did not become ready: "
                        + (d / "client.log").read_text()[-2000:])
        yield d, kernel
    finally:
        for pid in reversed(pids):
            stop_agent(pid, grace_s=10.0)
        netns.kill_all(NS)
        netns.delete(NS)


def test_one_host_loopback_other_ports_analyzes_the_same(loopback_cluster, tmp_path):
    d, kernel = loopback_cluster
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    res = subprocess.run(
        ["ip", "netns", "exec", NS, sys.executable, "-m", "vimprof.cli", "capture",
         "--nomad-addr", "http://127.0.0.1:5646", "--kernel", str(kernel), "--capture-iface",
         "lo", "--http-port", "5646", "--rpc-port", "5647", "--runs", "2", "--label", "lo"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr + res.stdout
    run = tmp_path / "runs" / "lo"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["hosts"]["capture"]["ports"] == {"http": [5646], "rpc": [5647]}
    assert manifest["hosts"]["capture"]["filter"] == "tcp port 5646 or tcp port 5647"
    tls = [json.loads(x) for x in (run / "timelines.jsonl").read_text().splitlines()]
    assert len(tls) == 2
    for t in tls:
        assert t["complete"] and set(t["phases"]) == PHASES, t["issues"]
        assert all(p["source"] == "capture" for p in t["phases"].values())
        assert {e["host"] for e in t["events"] if e["source"] == "capture"} == {"127.0.0.1"}
    # the ports come from the manifest; without them the capture holds nothing vimprof reads
    again = subprocess.run([sys.executable, "-m", "vimprof.cli", "analyze", str(run)],
                           capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0 and "2 timelines" in again.stdout, again.stdout
    from vimprof.analyzer.decoders.ports import Ports
    from vimprof.analyzer.pipeline import analyze_run
    from vimprof.rundir import RunDir

    bare = tmp_path / "bare"
    shutil.copytree(run, bare)
    m = json.loads((bare / "manifest.json").read_text())
    del m["hosts"]["capture"]["ports"]
    (bare / "manifest.json").write_text(json.dumps(m))

    def phases_of(rd: Path) -> list[set[str]]:
        return [set(json.loads(x)["phases"]) for x in
                (rd / "timelines.jsonl").read_text().splitlines()]

    # without its ports only Nomad's event stream speaks of the allocations
    assert analyze_run(RunDir(bare)).counts["timelines"] == 2
    assert all(not p & {"client_pickup", "commit"} for p in phases_of(bare))
    assert analyze_run(RunDir(bare), ports=Ports((5646,), (5647,))).counts["timelines"] == 2
    assert phases_of(bare) == [PHASES, PHASES]
