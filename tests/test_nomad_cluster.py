"""A real Nomad v1.6.3 cluster with ACLs bootstrapped and TLS on, in its own namespaces
(vimprof.lab.nomad_cluster), profiled through `--nomad-addr` as a user's cluster: token and CA
from the environment, the built-in micro-VNF and a user's HCL2 jobspec, timelines from client
instants and Nomad's events (the capture is TLS), and each kind of bad input as a one-line
error that leaves nothing on the cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from vimprof.lab import nomad_cluster
from vimprof.schema import assert_valid

pytestmark = pytest.mark.lab

VIMPROF = [sys.executable, "-m", "vimprof.cli"]
WIRE_ONLY = {"client_pickup", "commit"}
FROM_EVENTS = {"api", "scheduling", "task_start", "notification", "instantiation", "total",
               "stop"}


@pytest.fixture(scope="module")
def cluster(lab_lock):
    from labtools import lab_unavailable

    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    state = nomad_cluster.up()
    yield state
    nomad_cluster.down()


def run(*args: str, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIMPROF, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def user_env(c, token: str | None = None) -> dict[str, str]:
    return {"NOMAD_TOKEN": token or c.campaign_token, "NOMAD_CACERT": c.ca_cert}


def vimprof_jobs(c) -> list[str]:
    r = requests.get(f"{c.http_addr}/v1/jobs", params={"prefix": "vimprof-"}, timeout=5,
                     verify=c.ca_cert, headers={"X-Nomad-Token": c.management_token})
    return [j["ID"] for j in r.json()]


def test_the_cluster_refuses_anonymous_and_plain_http(cluster):
    r = requests.get(f"{cluster.http_addr}/v1/jobs", verify=cluster.ca_cert, timeout=5)
    assert r.status_code == 403
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{cluster.http_addr}/v1/status/leader", timeout=5)  # system CAs only


def test_campaign_through_acl_and_tls(cluster, tmp_path):
    res = run("capture", "--nomad-addr", cluster.http_addr, "--kernel", cluster.kernel,
              "--capture-iface", nomad_cluster.MGMT_IF, "--runs", "3", "--label", "acl",
              cwd=tmp_path, env=user_env(cluster))
    assert res.returncode == 0, res.stderr + res.stdout
    rd = tmp_path / "runs" / "acl"
    manifest = json.loads((rd / "manifest.json").read_text())
    assert manifest["vim"]["version"] == "1.6.3"
    assert manifest["cluster"] == {"acl": True, "token_name": "vimprof-campaign", "tls": True,
                                   "event_stream": "on"}
    timelines = [json.loads(x) for x in (rd / "timelines.jsonl").read_text().splitlines()]
    assert len(timelines) == 3
    requests_ = {json.loads(x)["alloc_id"]: json.loads(x)
                 for x in (rd / "requests.jsonl").read_text().splitlines()}
    for t in timelines:
        assert t["complete"] and t["instance"] in requests_
        assert set(t["phases"]) == FROM_EVENTS
        assert t["phases"]["api"]["source"] == "client"
        assert t["phases"]["task_start"]["source"] == "vim"
        assert t["phases"]["total"]["source"] == "client+vim"
        for phase in WIRE_ONLY:
            assert any(i.startswith(f"{phase} not measured:") and "TLS" in i
                       for i in t["issues"]), t["issues"]
        p, req = t["phases"], requests_[t["instance"]]
        # the server took "running" in before the pusher's blocking query returned it
        assert p["total"]["start_ns"] == req["t_submit_ns"]
        assert p["total"]["end_ns"] <= req["t_running_ns"]
        assert p["scheduling"]["end_ns"] <= p["task_start"]["end_ns"] <= p["total"]["end_ns"]
    # the capture saw only TLS; the analyzer said so instead of misparsing
    assert "TLS" in res.stderr
    # no credential in anything vimprof wrote
    for f in rd.iterdir():
        data = f.read_bytes()
        assert cluster.campaign_token.encode() not in data, f
    # the report names what could not be measured, and why
    import shutil

    shutil.copytree(rd, tmp_path / "runs" / "acl-again")
    rep = run("compare", "acl", "acl-again", "--out", str(tmp_path / "rep"), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert set(summary["labels"][0]["not_measured"]) == WIRE_ONLY
    assert "commit not measured" in (tmp_path / "rep" / "report.md").read_text()
    assert vimprof_jobs(cluster) == []
    assert_valid(rd)  # every file against vimprof/schemas (docs/run-directory.md)


def test_users_own_hcl_jobspec(cluster, tmp_path):
    job = tmp_path / "vnf.nomad.hcl"
    job.write_text(f"""
variable "kernel" {{
  default = "{cluster.kernel}"
}}
job "my-vnf" {{
  datacenters = ["dc1"]
  group "g" {{
    restart {{
      attempts = 0
      mode     = "fail"
    }}
    task "vnf" {{
      driver = "qemu"
      config {{
        image_path      = var.kernel
        drive_interface = "none"
        accelerator     = "tcg"
        args            = ["-kernel", var.kernel, "-no-reboot"]
      }}
      resources {{
        cpu    = 100
        memory = 128
      }}
    }}
  }}
}}
""")
    res = run("capture", "--nomad-addr", cluster.http_addr, "--job", str(job), "--runs", "2",
              "--label", "own", "--no-analyze", cwd=tmp_path, env=user_env(cluster))
    assert res.returncode == 0, res.stderr + res.stdout
    reqs = [json.loads(x) for x in (tmp_path / "runs" / "own" / "requests.jsonl")
            .read_text().splitlines()]
    assert [r["ok"] for r in reqs] == [True, True]
    assert all(r["job_id"].startswith("vimprof-own-") for r in reqs)
    manifest = json.loads((tmp_path / "runs" / "own" / "manifest.json").read_text())
    assert manifest["job"] == {"source": str(job), "group": None}
    res = run("analyze", "own", cwd=tmp_path)  # no capture: events and client instants
    assert res.returncode == 0, res.stderr
    tls = (tmp_path / "runs" / "own" / "timelines.jsonl").read_text().splitlines()
    assert len(tls) == 2 and all(json.loads(t)["complete"] for t in tls)
    assert vimprof_jobs(cluster) == []


def test_two_groups_need_a_group_to_measure(cluster, tmp_path):
    job = tmp_path / "two.json"
    group = {"Name": "a", "Count": 1, "Tasks": [{"Name": "t", "Driver": "qemu", "Config": {
        "image_path": cluster.kernel}}]}
    job.write_text(json.dumps({"Job": {"ID": "two", "TaskGroups": [group, {**group,
                                                                          "Name": "b"}]}}))
    res = run("capture", "--nomad-addr", cluster.http_addr, "--job", str(job), "--runs", "1",
              "--label", "two", cwd=tmp_path, env=user_env(cluster))
    assert res.returncode == 2
    assert "--job-group" in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("case", ["wrong token", "token without submit-job", "no token",
                                  "other CA", "bad jobspec"])
def test_bad_input_is_one_line_and_leaves_nothing(cluster, tmp_path, case):
    env = user_env(cluster)
    args = ["--kernel", cluster.kernel]
    expect = {"wrong token": "does not accept the token",
              "token without submit-job": "lacks the capability submit-job",
              "no token": "no token was given",
              "other CA": "not signed by the CA",
              "bad jobspec": "does not parse"}[case]
    if case == "wrong token":
        env["NOMAD_TOKEN"] = "6b1e0a7c-0000-4000-8000-000000000000"
    elif case == "token without submit-job":
        env["NOMAD_TOKEN"] = cluster.readonly_token
    elif case == "no token":
        env["NOMAD_TOKEN"] = ""
    elif case == "other CA":
        other = tmp_path / "ca"
        other.mkdir()
        from vimprof import paths

        subprocess.run([str(paths.nomad_binary()), "tls", "ca", "create"], cwd=other,
                       check=True, capture_output=True)
        env["NOMAD_CACERT"] = str(other / "nomad-agent-ca.pem")
    else:
        bad = tmp_path / "bad.hcl"
        bad.write_text('job "x" {\n  group "g" {\n    task "t" {\n      driver = \n')
        args = ["--job", str(bad)]
    res = run("capture", "--nomad-addr", cluster.http_addr, *args, "--runs", "1", "--label",
              "bad", cwd=tmp_path, env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert expect in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert vimprof_jobs(cluster) == []


def test_clean_on_the_cluster_with_token(cluster, tmp_path):
    res = run("clean", "--nomad-addr", cluster.http_addr, "--dry-run", cwd=tmp_path,
              env=user_env(cluster))
    assert res.returncode == 0, res.stderr
    assert "nothing left by vimprof" in res.stdout
