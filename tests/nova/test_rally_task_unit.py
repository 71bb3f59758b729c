"""Unit tests of the Rally task generator (vimprof/rally/task.py) and `vimprof rally task`."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess

import pytest
from click.testing import CliRunner

from vimprof.cli import cli
from vimprof.errors import VimprofError
from vimprof.rally import task as rtask

CLOUD = {"auth_url": "http://198.18.2.2:5000/v3", "username": "admin", "password": "pw-1234",
         "project_name": "admin", "user_domain_name": "Default",
         "project_domain_name": "Default", "region_name": "RegionOne",
         "identity_api_version": "3", "interface": "public"}
IMAGE = "0b9e6c37-3a63-4c1e-9d55-6d1f3b0f5a11"


def test_task_document_shape():
    spec = rtask.TaskSpec(runs=7, concurrency=2, image=IMAGE, flavor="vimprof-micro",
                          poll_ms=20, timeout_s=30)
    doc = rtask.task_document(spec)
    assert doc["version"] == 2
    (wl,) = doc["subtasks"][0]["workloads"]
    args = wl["scenario"][rtask.SCENARIO]
    assert args == {"image": {"id": IMAGE}, "flavor": {"name": "vimprof-micro"},
                    "poll_interval": 0.02, "timeout": 30, "microversion": "2.52",
                    "tag": "vimprof"}
    assert wl["runner"] == {"constant": {"times": 7, "concurrency": 2}}
    assert wl["sla"] == {"failure_rate": {"max": 100}}


@pytest.mark.parametrize("kw, msg", [
    ({"runs": 0}, "--runs"),
    ({"concurrency": 5}, "--concurrency"),
    ({"poll_ms": 0}, "--poll-ms"),
    ({"microversion": "2.36"}, ">= 2.37"),
    ({"microversion": "latest"}, "MAJOR.MINOR"),
])
def test_task_spec_rejects(kw, msg):
    spec = rtask.TaskSpec(**{"runs": 2, "image": "img", "flavor": "f", **kw})
    with pytest.raises(VimprofError, match=msg):
        rtask.task_document(spec)


def test_env_from_cloud_uses_existing_users():
    env = rtask.env_from_cloud(CLOUD)
    spec = env["existing@openstack"]
    assert spec["auth_url"] == CLOUD["auth_url"]
    assert spec["region_name"] == "RegionOne"
    assert spec["endpoint_type"] == "public"
    assert "admin" not in spec  # Rally must not create users: the cloud's own user runs it
    assert spec["users"] == [{"username": "admin", "password": "pw-1234",
                              "project_name": "admin", "user_domain_name": "Default",
                              "project_domain_name": "Default"}]


def test_env_from_cloud_needs_password_auth():
    with pytest.raises(VimprofError, match="password"):
        rtask.env_from_cloud({**CLOUD, "password": None})


def test_cloud_from_clouds_yaml(tmp_path, monkeypatch):
    pytest.importorskip("openstack")
    (tmp_path / "clouds.yaml").write_text(
        "clouds:\n  prod:\n    auth:\n      auth_url: https://keystone.example:5000/v3\n"
        "      username: alice\n      password: s3cret\n      project_name: nfv\n"
        "      user_domain_name: Default\n      project_domain_name: Default\n"
        "    region_name: RegionTwo\n    verify: false\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
    cloud = rtask.cloud_from_clouds_yaml("prod")
    spec = rtask.env_from_cloud(cloud)["existing@openstack"]
    assert spec["auth_url"] == "https://keystone.example:5000/v3"
    assert spec["users"][0]["username"] == "alice"
    assert spec["region_name"] == "RegionTwo"
    assert spec["https_insecure"] is True
    with pytest.raises(VimprofError, match="nosuch"):
        rtask.cloud_from_clouds_yaml("nosuch")


def test_write_task_dir(tmp_path):
    out = tmp_path / "t"
    spec = rtask.TaskSpec(runs=3, image="vimprof-testvnf-diskless", flavor="vimprof-micro")
    cmds = rtask.write_task_dir(out, spec, CLOUD, "vimprof-x")
    assert json.loads((out / "task.json").read_text()) == rtask.task_document(spec)
    assert stat.S_IMODE(os.stat(out / "env.json").st_mode) == 0o600
    assert "sqlite:///" + str((out / "rally.sqlite").resolve()) in (out / "rally.conf").read_text()
    assert [c[3:5] if c[3] != "--plugin-paths" else c[5:7] for c in cmds] == [
        ["db", "ensure"], ["env", "create"], ["task", "start"], ["task", "list"],
        ["task", "report"]]
    assert cmds[-1][-1] == rtask.TASK_UUID
    start = cmds[2]
    assert start[start.index("--plugin-paths") + 1] == str(rtask.PLUGIN.resolve())
    assert start[start.index("--env") + 1] == "vimprof-x"
    script = (out / "commands.sh").read_text()
    lines = [ln for ln in script.splitlines() if ln and not ln.startswith(("#", "set "))]
    assert [shlex.split(ln) for ln in lines[:3]] == cmds[:3]
    assert lines[3] == f"uuid=$({shlex.join(cmds[3])} | tail -n 1)"
    assert shlex.split(lines[4]) == [*cmds[4][:-1], "$uuid"]
    assert "pw-1234" not in script  # the password stays in env.json


def test_cli_task_with_os_cloud(tmp_path, monkeypatch):
    pytest.importorskip("openstack")
    (tmp_path / "clouds.yaml").write_text(
        "clouds:\n  c1:\n    auth:\n      auth_url: http://198.18.2.2:5000/v3\n"
        "      username: u\n      password: p\n      project_name: pr\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
    r = CliRunner().invoke(cli, ["rally", "task", "--runs", "4", "--concurrency", "2",
                                 "--os-cloud", "c1", "--image", "img", "--flavor", "flv",
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "task start" in r.output and "--plugin-paths" in r.output
    task = json.loads((tmp_path / "o" / "task.json").read_text())
    runner = task["subtasks"][0]["workloads"][0]["runner"]["constant"]
    assert runner == {"times": 4, "concurrency": 2}
    r = CliRunner().invoke(cli, ["rally", "task", "--os-cloud", "c1", "--out",
                                 str(tmp_path / "o2")])
    assert isinstance(r.exception, VimprofError) and "--image" in str(r.exception)


def test_rally_accepts_generated_task(tmp_path):
    """Rally itself (its venv) parses and validates the generated task file's schema."""
    exe = rtask.venv() / "bin" / "rally"
    if not exe.exists():
        pytest.skip("Rally's venv is missing: run scripts/setup-rally")
    spec = rtask.TaskSpec(runs=2, image="img", flavor="flv")
    rtask.write_task_dir(tmp_path, spec, CLOUD, "vimprof-y")
    py = str(rtask.venv() / "bin" / "python")
    code = ("import json,sys; from rally.task import task_cfg; "
            "c = task_cfg.TaskConfig(json.load(open(sys.argv[1]))); "
            "w = c.subtasks[0]['workloads'][0]; print(w['name'], w['runner_type'])")
    r = subprocess.run([py, "-c", code, str(tmp_path / "task.json")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == [rtask.SCENARIO, "constant"]
