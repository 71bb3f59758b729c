"""`vimprof rally task|run`: Rally task file, environment spec and the `rally` commands.

A task directory (`--out DIR`) holds:

    task.json    Rally task (format v2): one workload of VimprofNova.boot_and_delete_microvnf
                 (vimprof/rally/plugin.py), runner "constant" (times = runs, concurrency)
    env.json     Rally environment spec "existing@openstack": the lab's admin (vimprof lab up
                 nova) or a clouds.yaml entry (--os-cloud), as Rally's `users` (no users are
                 created). Mode 0600: it holds a password.
    rally.conf   Rally's configuration: its database, DIR/rally.sqlite (nothing in ~/.rally)
    commands.sh  the exact `rally` commands (`vimprof rally run` executes the same)
    report.json  after the run: `rally task report --json` (vimprof rally import reads it)

Rally itself lives in its own venv (scripts/setup-rally: <cache>/rally-venv).
Sources: rally/cli/commands/{env,task,db}.py, rally_openstack/environment/platforms/existing.py.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vimprof import paths
from vimprof.errors import VimprofError

SCENARIO = "VimprofNova.boot_and_delete_microvnf"
PLUGIN = Path(__file__).with_name("plugin.py")
TASK_FILE = "task.json"
ENV_FILE = "env.json"
CONF_FILE = "rally.conf"
COMMANDS_FILE = "commands.sh"
REPORT_FILE = "report.json"
DB_FILE = "rally.sqlite"
DEFAULT_MICROVERSION = "2.52"
TASK_UUID = "{task_uuid}"  # placeholder in the report command (see commands())


def venv() -> Path:
    """Rally's venv, <cache>/rally-venv (scripts/setup-rally)."""
    return paths.cache_root() / "rally-venv"


def rally_binary() -> Path:
    """<cache>/rally-venv/bin/rally; VimprofError when the venv is missing."""
    exe = venv() / "bin" / "rally"
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        raise VimprofError(f"Rally is not installed ({exe} missing): run scripts/setup-rally")
    return exe


@dataclass(frozen=True)
class TaskSpec:
    """One Rally workload: `runs` boots (iterations), `concurrency` at a time, polled every
    `poll_ms` ms, each wait failing after `timeout_s` s; image and flavor are names or ids
    (Rally resolves them: glance_image / nova_flavor types)."""

    runs: int
    image: str
    flavor: str
    concurrency: int = 1
    poll_ms: float = 50.0
    timeout_s: float = 120.0
    microversion: str = DEFAULT_MICROVERSION
    tag: str = "vimprof"

    def validate(self) -> None:
        """Raises VimprofError for a value Rally would reject later."""
        if self.runs < 1:
            raise VimprofError("--runs must be at least 1")
        if not 1 <= self.concurrency <= self.runs:
            raise VimprofError(f"--concurrency must be between 1 and --runs ({self.runs})")
        if self.poll_ms <= 0 or self.timeout_s <= 0:
            raise VimprofError("--poll-ms and --timeout must be positive")
        try:
            major, minor = (int(x) for x in self.microversion.split("."))
        except ValueError:
            raise VimprofError(f"--microversion {self.microversion!r}: use MAJOR.MINOR, "
                               "e.g. 2.52") from None
        if (major, minor) < (2, 37):
            raise VimprofError("--microversion must be >= 2.37 (networks 'none')")


def task_document(spec: TaskSpec, title: str = "vimprof") -> dict[str, Any]:
    """The Rally task (format v2) as a dict: one subtask, one workload of SCENARIO."""
    spec.validate()
    args = {"image": _ref(spec.image), "flavor": _ref(spec.flavor),
            "poll_interval": spec.poll_ms / 1000.0, "timeout": spec.timeout_s,
            "microversion": spec.microversion, "tag": spec.tag}
    return {
        "version": 2,
        "title": title,
        "description": "vimprof: boot and delete a diskless micro-VNF (networks none)",
        "subtasks": [{
            "title": SCENARIO,
            "workloads": [{
                "scenario": {SCENARIO: args},
                "runner": {"constant": {"times": spec.runs, "concurrency": spec.concurrency}},
                "contexts": {},
                # failed iterations are data (recorded, imported as failed runs), not a verdict
                "sla": {"failure_rate": {"max": 100}},
            }],
        }],
    }


def _ref(value: str) -> dict[str, str]:
    """A Rally resource reference: {"id": UUID} for a UUID, else {"name": value}."""
    import uuid

    try:
        uuid.UUID(value)
    except ValueError:
        return {"name": value}
    return {"id": value}


def env_from_cloud(cloud: dict[str, Any]) -> dict[str, Any]:
    """Rally's "existing@openstack" spec from openstack.connect()-style keyword arguments
    (LabState.cloud(): auth_url, username, password, project_name, *_domain_name,
    region_name, interface). The credentials go in as `users` (Rally creates none)."""
    missing = [k for k in ("auth_url", "username", "password", "project_name") if not cloud.get(k)]
    if missing:
        raise VimprofError(f"the cloud's credentials lack {', '.join(missing)}: use a "
                           "password auth entry in clouds.yaml")
    user = {"username": cloud["username"], "password": cloud["password"],
            "project_name": cloud["project_name"],
            "user_domain_name": cloud.get("user_domain_name") or "Default",
            "project_domain_name": cloud.get("project_domain_name") or "Default"}
    spec: dict[str, Any] = {"auth_url": cloud["auth_url"], "users": [user],
                            "endpoint_type": cloud.get("interface") or "public"}
    if cloud.get("region_name"):
        spec["region_name"] = cloud["region_name"]
    if cloud.get("verify") is False or cloud.get("insecure"):
        spec["https_insecure"] = True
    if isinstance(cloud.get("cacert"), str):
        spec["https_cacert"] = cloud["cacert"]
    return {"existing@openstack": spec}


def cloud_from_clouds_yaml(name: str) -> dict[str, Any]:
    """The clouds.yaml entry `name` (openstack.config: OS_CLIENT_CONFIG_FILE, ./clouds.yaml,
    ~/.config/openstack, /etc/openstack) flattened to env_from_cloud()'s keys.

    Raises VimprofError when openstacksdk is missing or the entry is unknown / not password auth.
    """
    try:
        from openstack import config as os_config
    except ImportError:
        raise VimprofError("openstacksdk is missing: pip install -e '.[nova]'") from None
    try:
        region = os_config.OpenStackConfig().get_one(cloud=name)
    except Exception as exc:  # noqa: BLE001 - openstack.config errors: unknown cloud ...
        raise VimprofError(f"cloud {name!r}: {type(exc).__name__}: {exc}; check clouds.yaml "
                           "and --os-cloud") from None
    auth = dict(region.config.get("auth") or {})
    out = {k: auth.get(k) for k in ("auth_url", "username", "password", "project_name",
                                    "user_domain_name", "project_domain_name")}
    out["region_name"] = region.config.get("region_name") or None
    out["interface"] = region.config.get("interface") or "public"
    out["verify"] = region.config.get("verify", True)
    out["cacert"] = region.config.get("cacert")
    return out


def lab_cloud() -> tuple[dict[str, Any], dict[str, str]]:
    """The running Nova lab's admin credentials and {"image", "flavor"} to boot (the diskless
    image). Raises VimprofError when the lab is not up."""
    from vimprof.lab import nova as lab

    state = lab.current()
    if state is None:
        raise VimprofError("the Nova lab is not running: `vimprof lab up nova`, or pass "
                           "--os-cloud NAME --image IMG --flavor FLV")
    return state.cloud(), {"image": state.image_ids["diskless"], "flavor": state.flavor_id}


def rally_conf(out: Path) -> str:
    """rally.conf text: the database in `out` (sqlite), no log file."""
    return f"[database]\nconnection = sqlite:///{(out / DB_FILE).resolve()}\n"


def commands(out: Path, env_name: str, rally: Path | None = None) -> list[list[str]]:
    """The `rally` command lines, in order: db ensure, env create, task start, task list (the
    task's uuid), task report. TASK_UUID in the last stands for the uuid the list printed."""
    exe = str(rally or venv() / "bin" / "rally")
    out = out.resolve()
    base = [exe, "--config-file", str(out / CONF_FILE)]
    return [
        [*base, "db", "ensure"],
        [*base, "env", "create", "--name", env_name, "--spec", str(out / ENV_FILE),
         "--no-use"],
        [*base, "--plugin-paths", str(PLUGIN.resolve()), "task", "start",
         "--env", env_name, "--tag", env_name, "--no-use", str(out / TASK_FILE)],
        [*base, "task", "list", "--env", env_name, "--uuids-only"],
        [*base, "task", "report", "--json", "--out", str(out / REPORT_FILE), TASK_UUID],
    ]


def shell_script(cmds: list[list[str]]) -> str:
    """commands.sh: `cmds` as a POSIX shell script (the list's last uuid fills TASK_UUID)."""
    lines = ["#!/bin/sh", "# generated by `vimprof rally task`", "set -e"]
    for c in cmds:
        if c[-1] == "--uuids-only":
            lines.append(f"uuid=$({shlex.join(c)} | tail -n 1)")
        elif c[-1] == TASK_UUID:
            lines.append(shlex.join(c[:-1]) + ' "$uuid"')
        else:
            lines.append(shlex.join(c))
    return "\n".join(lines) + "\n"


def write_task_dir(out: Path, spec: TaskSpec, cloud: dict[str, Any], env_name: str,
                   title: str = "vimprof") -> list[list[str]]:
    """Write task.json, env.json (0600), rally.conf and commands.sh into `out`; returns the
    commands (see commands()). Raises VimprofError for bad spec values or credentials."""
    task = task_document(spec, title)
    env = env_from_cloud(cloud)
    out.mkdir(parents=True, exist_ok=True)
    (out / TASK_FILE).write_text(json.dumps(task, indent=2) + "\n")
    env_path = out / ENV_FILE
    fd = os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(env, indent=2) + "\n")
    os.chmod(env_path, 0o600)
    (out / CONF_FILE).write_text(rally_conf(out))
    cmds = commands(out, env_name)
    (out / COMMANDS_FILE).write_text(shell_script(cmds))
    os.chmod(out / COMMANDS_FILE, 0o755)
    return cmds


def run_commands(cmds: list[list[str]], out: Path, echo=print) -> Path:
    """Run `cmds` (from write_task_dir) in order, output into out/rally.log; returns
    out/report.json. Raises VimprofError naming the failing command and the log's tail."""
    rally_binary()
    log = out / "rally.log"
    uuid = ""
    with open(log, "a", encoding="utf-8") as fh:
        for cmd in cmds:
            cmd = [uuid if a == TASK_UUID else a for a in cmd]
            echo("$ " + shlex.join(cmd))
            fh.write("$ " + shlex.join(cmd) + "\n")
            fh.flush()
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=fh, text=True)
            fh.write(r.stdout)
            fh.flush()
            if r.returncode != 0:
                tail = log.read_text(errors="replace").splitlines()[-15:]
                verb = " ".join(a for a in cmd[3:] if not a.startswith(("-", "/")))[:40]
                raise VimprofError(f"`rally {verb}` failed (exit {r.returncode}); see {log}:\n"
                                   + "\n".join(tail))
            if cmd[-1] == "--uuids-only":
                found = r.stdout.split()
                if not found:
                    raise VimprofError(f"rally listed no task for the environment; see {log}")
                uuid = found[-1]
    report = out / REPORT_FILE
    if not report.is_file():
        raise VimprofError(f"rally wrote no {report}; see {log}")
    return report
