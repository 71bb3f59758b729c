"""`vimprof rally import REPORT.json --label L`: a Rally JSON report as a vimprof run directory.

Reads the report of `rally task report --json` (format 1.x: {"info": {...}, "tasks": [{"uuid",
"subtasks": [{"workloads": [{"scenario": {NAME: args}, "runner", "data": [iteration, ...],
...}]}]}]}; an iteration is {"timestamp": s, "duration": s, "error": [type, msg, tb] | [],
"atomic_actions": [{"name", "started_at": s, "finished_at": s, "children": [...]}],
"output": {"complete": [{"title": "vimprof", "chart_plugin": "Table", ...}]}}) and writes,
with run = the iteration's index in start order:

    manifest.json     "schema": "vimprof-run/1", "source": "rally", campaign (runs,
                      concurrency, poll_ms, warmup_runs ...), vim {"name": "nova"},
                      rally {version, task and workload uuids, scenario}
    requests.jsonl    one line per iteration, the Nova pusher's keys (t_submit_ns, t_active_ns,
                      ..., api_ms, active_ms, delete_ms, ok, error, fault, request ids)
    timelines.jsonl   one record per iteration ("vim": "nova", vimprof/phases.py shape), phases
                      from the atomic actions (source "rally"; instants ns, durations ms)

Atomic action -> phase (vimprof/rally/plugin.py names; Rally's own NovaServers scenarios too):

    vimprof.total -> total, vimprof.api -> api, vimprof.wait_active -> wait_active,
    vimprof.delete -> delete, vimprof.delete_api -> delete_api, vimprof.wait_gone -> wait_gone,
    nova.boot_server -> total, nova.delete_server -> delete

Rally sees only the client side: Nova's server-side phases (conductor, scheduler, compute,
spawn ...) are absent, so every record is "complete": false with one issue saying so (the
phases.py contract); `vimprof compare` compares api, total and delete. Secrets never reach
the output: values of keys naming a password, token or secret and Keystone fernet tokens /
JWTs in error texts are replaced by "<scrubbed>" (scrub()).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import vimprof
from vimprof import rundir
from vimprof.errors import VimprofError
from vimprof.phases import NOVA
from vimprof.rally.task import SCENARIO
from vimprof.rundir import RunDir

ATOMIC_PHASES = {
    "vimprof.total": "total", "vimprof.api": "api", "vimprof.wait_active": "wait_active",
    "vimprof.delete": "delete", "vimprof.delete_api": "delete_api",
    "vimprof.wait_gone": "wait_gone",
    "nova.boot_server": "total", "nova.delete_server": "delete",
}
KNOWN_SCENARIOS = (SCENARIO, "NovaServers.boot_and_delete_server")
OUTPUT_TITLE = "vimprof"
SCRUBBED = "<scrubbed>"
_SECRET_KEY = re.compile(r"passw(or)?d|token|secret|credential", re.I)
_TOKEN = re.compile(r"eyJ[A-Za-z0-9_-]{6,}(?:\.[A-Za-z0-9_-]*){0,2}|gAAAAA[A-Za-z0-9_=-]{20,}")
SERVER_SIDE = [p for p in NOVA.stack if p != "api"]
ISSUE = ("rally: client-side atomic actions only; Nova's server-side phases ("
         + ", ".join(SERVER_SIDE) + ") need a capture: vimprof capture --vim nova")


def scrub(value: Any) -> Any:
    """A copy of a JSON value with secrets replaced by "<scrubbed>": every value under a key
    naming a password, token, secret or credential, and Keystone fernet tokens / JWTs inside
    strings."""
    if isinstance(value, dict):
        return {k: (SCRUBBED if isinstance(k, str) and _SECRET_KEY.search(k)
                    and v not in (None, "", [], {}) else scrub(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return _TOKEN.sub(SCRUBBED, value)
    return value


def _ns(seconds: Any) -> int | None:
    return round(float(seconds) * 1e9) if isinstance(seconds, (int, float)) else None


def _unref(value: Any) -> Any:
    """A Rally resource reference ({"id": X} / {"name": X}) as X."""
    if isinstance(value, dict):
        return value.get("id") or value.get("name")
    return value


def _walk_actions(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for a in actions or []:
        out.append(a)
        out.extend(_walk_actions(a.get("children") or []))
    return out


def _facts(iteration: dict[str, Any]) -> dict[str, Any]:
    """The plugin's "vimprof" Table output as {key: decoded JSON value} ({} if absent)."""
    for out in (iteration.get("output") or {}).get("complete") or []:
        if out.get("title") != OUTPUT_TITLE:
            continue
        rows = (out.get("data") or {}).get("rows") or []
        facts = {}
        for row in rows:
            if isinstance(row, list) and len(row) == 2:
                try:
                    facts[str(row[0])] = json.loads(row[1])
                except (TypeError, ValueError):
                    facts[str(row[0])] = row[1]
        return facts
    return {}


def workloads(report: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(task, workload) pairs of the report, in report order.

    Raises VimprofError when `report` is not a Rally JSON report (no "tasks" list).
    """
    tasks = report.get("tasks") if isinstance(report, dict) else None
    if not isinstance(tasks, list):
        raise VimprofError("not a Rally JSON report (no 'tasks'): produce one with "
                           "`rally task report --json --out REPORT.json`")
    return [(t, w) for t in tasks for s in t.get("subtasks") or []
            for w in s.get("workloads") or []]


def _scenario(workload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    (name, args), = (workload.get("scenario") or {"?": {}}).items()
    return name, args or {}


def pick_workload(report: dict[str, Any], task_uuid: str | None = None
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The workload to import: the last one of a known scenario (of task `task_uuid` if given).

    Raises VimprofError when there is none (naming the scenarios found).
    """
    pairs = workloads(report)
    found = [(t, w) for t, w in pairs if _scenario(w)[0] in KNOWN_SCENARIOS
             and (task_uuid is None or t.get("uuid") == task_uuid)]
    if not found:
        names = sorted({_scenario(w)[0] for _, w in pairs}) or ["none"]
        raise VimprofError(
            f"no workload of {' or '.join(KNOWN_SCENARIOS)}"
            + (f" in task {task_uuid}" if task_uuid else "")
            + f" in the report (found: {', '.join(names)}); run `vimprof rally run`")
    return found[-1]


def _request_line(run: int, it: dict[str, Any], facts: dict[str, Any],
                  phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    err = it.get("error") or []
    ok = not err
    line: dict[str, Any] = {
        "vim": "nova", "run": run, "source": "rally", "ok": ok,
        "error": scrub(f"{err[0]}: {err[1]}") if len(err) >= 2 else None,
        "fault": scrub(facts.get("fault")), "name": facts.get("name"),
        "server_id": facts.get("server_id"), "status": facts.get("status"),
        "request_id": facts.get("request_id"),
        "delete_request_id": facts.get("delete_request_id"),
        "nova_request_id": facts.get("nova_request_id"),
        "polls": facts.get("polls"), "states": facts.get("states") or [],
        "warmup": False,
    }
    # client instants: the plugin's own ns clocks, else the atomic actions' bounds
    fallback = {"t_submit_ns": ("api", "start_ns"), "t_accepted_ns": ("api", "end_ns"),
                "t_active_ns": ("total", "end_ns"), "t_delete_ns": ("delete", "start_ns"),
                "t_deleted_ns": ("delete_api", "end_ns"), "t_gone_ns": ("delete", "end_ns")}
    for key, (phase, end) in fallback.items():
        v = facts.get(key)
        line[key] = v if isinstance(v, int) else (phases.get(phase) or {}).get(end)
    if line["t_submit_ns"] is None and "total" in phases:
        line["t_submit_ns"] = phases["total"]["start_ns"]
    for a, b, name in (("t_submit_ns", "t_accepted_ns", "api_ms"),
                       ("t_submit_ns", "t_active_ns", "active_ms"),
                       ("t_delete_ns", "t_gone_ns", "delete_ms")):
        line[name] = ((line[b] - line[a]) / 1e6
                      if line[a] is not None and line[b] is not None else None)
    line["t_registered_ns"] = line["t_accepted_ns"]
    line["t_running_ns"] = line["t_active_ns"]
    return line


def _timeline(run: int, it: dict[str, Any], facts: dict[str, Any]
              ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    phases: dict[str, dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    issues = [ISSUE]
    for a in _walk_actions(it.get("atomic_actions") or []):
        name = str(a.get("name"))
        start, end = _ns(a.get("started_at")), _ns(a.get("finished_at"))
        if start is not None:
            events.append({"t_ns": start, "source": "rally", "host": "rally",
                           "name": f"{name} start", "attrs": {}})
        if end is not None:
            events.append({"t_ns": end, "source": "rally", "host": "rally",
                           "name": f"{name} end", "attrs": {"failed": bool(a.get("failed"))}})
        phase = ATOMIC_PHASES.get(name)
        if phase is None or start is None:
            continue
        if end is None or a.get("failed"):
            issues.append(f"{phase}: atomic action {name} failed or unfinished")
            continue
        phases[phase] = {"start_ns": start, "end_ns": end, "ms": (end - start) / 1e6,
                         "from": f"{name} start", "to": f"{name} end", "source": "rally"}
    for s in facts.get("states") or []:
        if isinstance(s, dict) and isinstance(s.get("t_ns"), int):
            events.append({"t_ns": s["t_ns"], "source": "rally", "host": "rally",
                           "name": f"GET /servers/<id> {s.get('status')}",
                           "attrs": {"task_state": s.get("task_state")}})
    err = it.get("error") or []
    if err:
        issues.append(scrub(f"iteration failed: {err[0]}: {err[1] if len(err) > 1 else ''}"))
    for p in (*[q for q in NOVA.all if q not in SERVER_SIDE], NOVA.stop):
        if p not in phases and not any(i.startswith(f"{p}:") for i in issues):
            issues.append(f"{p}: no atomic action measured it")
    events.sort(key=lambda e: e["t_ns"])
    rec = {"vim": "nova", "source": "rally",
           "instance": facts.get("server_id") or f"rally-iteration-{run}",
           "job": facts.get("request_id") or "", "run": run, "complete": False,
           "issues": issues, "events": events, "phases": phases}
    return rec, phases


def import_report(report_path: Path, label: str, runs_dir: Path = rundir.DEFAULT_RUNS_ROOT,
                  *, warmup_runs: int = 0, force: bool = False,
                  task_uuid: str | None = None) -> RunDir:
    """Write run directory `runs_dir/label` from the Rally JSON report at `report_path`.

    Returns the RunDir. Raises VimprofError when the file is unreadable or not a Rally JSON
    report, holds no workload of a known scenario, has no iteration, `warmup_runs` leaves no
    measured iteration, or the run directory exists (without `force`).
    """
    try:
        report = json.loads(Path(report_path).read_text())
    except OSError as exc:
        raise VimprofError(f"cannot read {report_path}: {exc.strerror}") from None
    except ValueError as exc:
        raise VimprofError(f"{report_path} is not JSON ({exc}); pass the file written by "
                           "`rally task report --json --out FILE`") from None
    task, wl = pick_workload(report, task_uuid)
    iterations = sorted(wl.get("data") or [], key=lambda it: it.get("timestamp") or 0)
    if not iterations:
        raise VimprofError(f"{report_path}: the workload has no iteration (task status "
                           f"{task.get('status')!r}); see `rally task detailed`")
    if warmup_runs >= len(iterations):
        raise VimprofError(f"--warmup {warmup_runs} leaves no measured run of "
                           f"{len(iterations)}")
    run = RunDir.create(label, runs_dir, force=force)
    scenario, args = _scenario(wl)
    runner_type, runner = next(iter((wl.get("runner") or {"?": {}}).items()))
    failures = 0
    start_ns = end_ns = None
    with run.writer(rundir.REQUESTS) as req_out, run.writer(rundir.TIMELINES) as tl_out:
        for i, it in enumerate(iterations):
            facts = _facts(it)
            rec, phases = _timeline(i, it, facts)
            line = _request_line(i, it, facts, phases)
            line["warmup"] = i < warmup_runs
            failures += not line["ok"]
            req_out.write(line)
            tl_out.write(rec)
            t0 = _ns(it.get("timestamp"))
            t1 = _ns((it.get("timestamp") or 0) + (it.get("duration") or 0)
                     + (it.get("idle_duration") or 0)) if t0 is not None else None
            if t0 is not None:
                start_ns = t0 if start_ns is None else min(start_ns, t0)
                end_ns = t1 if end_ns is None else max(end_ns, t1)
    info = report.get("info") or {}
    poll = args.get("poll_interval")
    run.update_manifest(
        schema=rundir.SCHEMA_VERSION, vimprof_version=vimprof.__version__, label=label,
        source="rally",
        campaign={"id": task.get("uuid"), "runs": len(iterations),
                  "mode": f"rally {runner_type}", "concurrency": runner.get("concurrency"),
                  "variant": None, "poll_ms": poll * 1000.0 if isinstance(poll, (int, float))
                  else None, "timeout_s": args.get("timeout"), "warmup_runs": warmup_runs,
                  "image_id": _unref(args.get("image")), "flavor_id": _unref(args.get("flavor")),
                  "networks": "none" if scenario == SCENARIO else None,
                  "microversion": args.get("microversion")},
        vim={"name": "nova", "version": "unknown"},
        rally={"version": info.get("rally_version"), "format": info.get("format_version"),
               "report": str(Path(report_path).resolve()), "task_uuid": task.get("uuid"),
               "task_status": task.get("status"), "env_name": task.get("env_name"),
               "tags": task.get("tags"), "workload_uuid": wl.get("uuid"),
               "scenario": scenario, "runner": {runner_type: runner},
               "pass_sla": wl.get("pass_sla"),
               "failed_iteration_count": wl.get("failed_iteration_count")},
        hosts={"pusher": "rally", "capture": None},
        clock="client-side only: Rally's atomic actions (epoch s, float) and the plugin's "
              "ns instants, one clock",
        start_ns=start_ns, end_ns=end_ns, interrupted=False, failures=failures,
    )
    return run
