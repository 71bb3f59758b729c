"""Merge the non-wire timing sources into capture timelines, and cross-check them.

Sources (all in the run directory, vimprof/rundir.py):

- hooks.jsonl: one line per driver hook interval, written by the micro-VNF task driver plugin
  (vimprof/drivers/hooks.py): {"t_ns", "end_ns", "hook": "init_environment" | "spawn" |
  "clean", "alloc_id", "task", "driver", "variant", "backend", "node"}. Lines with "probe"
  (the hypervisor floor, no alloc_id) are not instances and are ignored here. Times are the
  client host's clock; `hooks_offset_ns` is added to them (0 on the one-machine lab).
  Each becomes two events (source "hook", "<hook> start"/"<hook> end") and a phase named
  after the hook (source "hook"); several tasks of one allocation give one phase from the
  earliest start to the latest end; a phase of the same name derived from the wire (Nova's
  spawn) is kept and the hook is cross-checked against it instead. A Nova driver's hooks
  (spawn, create_image, generate_xml, libvirt_spawn, wait_boot) name the server in
  "instance" instead of "alloc_id".
- vim-events.jsonl: the VIM's own events. Nomad task events (vimprof/pushers/nomad.py):
  {"t_ns", "source": "vim", "subject": <alloc id>, "task", "name": <TaskEvent.Type>,
  "message"} become events "Task event <Type>" with source "vim"; download_artifact is
  "Downloading Artifacts" -> the next task event of the same task (source "vim"; from the
  wire's own task events when vim-events has none). Nova instance actions
  ({"subject": <server uuid>, "name": "compute__do_build_and_run_instance", "t_ns",
  "end_ns", "vim": "nova"}) are events with source "vim" too.
- requests.jsonl: the pusher's own observations (t_registered_ns, t_running_ns, t_gone_ns),
  and which instances are the campaign's: `job_runs_of` (job id / server uuid -> the
  pusher's "run" value, handed to the builders) and `belongs` (the sink keeps only those).

Cross-checks (`crosscheck`): each timeline gets a "crosscheck" dict
{"tolerance_ms": float, "checks": [{"check", "rule", "capture_ns", "other_ns", "other",
"diff_ms", "ok"}], "disagreements": int}; rules: "equal" (|capture - other| <= tolerance),
"after" (other >= capture - tolerance), "before" (other <= capture + tolerance). A failed
check adds an issue "crosscheck: ..." to the timeline and a warning line to the result.
Nothing here raises on bad records: they are counted and reported as warnings.

Analyzer stage 5, enrich (vimprof/analyzer/__init__.py): timeline dicts from builders/ in,
the same dicts merged and cross-checked out (Enricher.apply, in place), to sink.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HOOK_NAMES = ("init_environment", "spawn", "clean")
DOWNLOAD = "Downloading Artifacts"
TASK_PREFIX = "Task event "
DEFAULT_TOLERANCE_MS = 50.0
MAX_CROSSCHECK_WARNINGS = 100  # lines; the rest are counted (each timeline has its issues)


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(JSON object lines of `path`, number of bad lines); ([], 0) when it does not exist.

    A half-written last line (a campaign killed mid-write) counts as bad, not as an error.
    """
    out: list[dict[str, Any]] = []
    bad = 0
    if not path.is_file():
        return out, 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(rec, dict):
                out.append(rec)
            else:
                bad += 1
    return out, bad


def job_runs_of(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """job id (Nomad) / server uuid (Nova) -> the pusher's "run" value."""
    runs: dict[str, Any] = {}
    for rec in requests:
        for key in ("job_id", "server_id"):
            v = rec.get(key)
            if isinstance(v, str) and v:
                runs[v] = rec.get("run")
    return runs


def belongs(timeline: dict[str, Any], job_runs: dict[str, Any]) -> bool:
    """Whether an allocation is one of this campaign's instances.

    A capture also shows allocations of other jobs in passing (an earlier campaign's last
    allocation reporting late, other users' jobs): with requests.jsonl only its jobs count;
    without it, an allocation counts once its job is known from the capture.
    """
    if timeline.get("vim") == "nova":
        return timeline["instance"] in job_runs if job_runs else True
    job = timeline.get("job")
    if job_runs:
        return job in job_runs
    return bool(job)


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _phase(start: int, end: int, frm: str, to: str, source: str) -> dict[str, Any]:
    return {
        "start_ns": start,
        "end_ns": end,
        "ms": round((end - start) / 1e6, 3),
        "from": frm,
        "to": to,
        "source": source,
    }


def _sort_events(tl: dict[str, Any]) -> None:
    tl["events"].sort(key=lambda e: (e["t_ns"], e["name"], e["source"]))


def _hook_instance(rec: dict[str, Any]) -> str | None:
    """The instance a hooks.jsonl record times (alloc_id, or Nova's instance), or None when
    the record lacks t_ns <= end_ns, a hook name or an instance."""
    start, end = _int(rec.get("t_ns")), _int(rec.get("end_ns"))
    hook, alloc = rec.get("hook"), rec.get("alloc_id") or rec.get("instance")
    if start is None or end is None or end < start or not isinstance(hook, str) or not hook \
            or not isinstance(alloc, str):
        return None
    return alloc


def _event_ok(rec: dict[str, Any]) -> bool:
    """A vim-events.jsonl record has a subject, a name and t_ns."""
    return isinstance(rec.get("subject"), str) and isinstance(rec.get("name"), str) \
        and _int(rec.get("t_ns")) is not None


def _by_instance(requests: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """requests.jsonl records by alloc_id / server_id / instance."""
    out: dict[str, dict[str, Any]] = {}
    for r in requests:
        for key in ("alloc_id", "server_id", "instance"):
            v = r.get(key)
            if isinstance(v, str) and v:
                out[v] = r
    return out


def _merge_warnings(bad_hooks: int = 0, unknown_hooks: int = 0, bad_events: int = 0) -> list[str]:
    out = []
    if bad_hooks:
        out.append(f"hooks.jsonl: {bad_hooks} record(s) without t_ns/end_ns/hook/alloc_id "
                   "skipped")
    if unknown_hooks:
        out.append(f"hooks.jsonl: {unknown_hooks} record(s) for allocations not in the "
                   "capture's timelines ignored")
    if bad_events:
        out.append(f"vim-events.jsonl: {bad_events} record(s) without subject/name/t_ns "
                   "skipped")
    return out


def merge_hooks(
    timelines: list[dict[str, Any]], hooks: Iterable[dict[str, Any]], offset_ns: int = 0
) -> list[str]:
    """Add hook events and phases to the timelines they name; returns warning lines."""
    by_alloc = {t["instance"]: t for t in timelines}
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    bad = unknown = 0
    for rec in hooks:
        if "probe" in rec:
            continue  # the hypervisor floor: not an instance
        alloc = _hook_instance(rec)
        if alloc is None:
            bad += 1
            continue
        hook = rec["hook"]
        if alloc not in by_alloc:
            unknown += 1
            continue
        grouped.setdefault(alloc, {}).setdefault(hook, []).append(rec)
    for alloc, per_hook in grouped.items():
        tl = by_alloc[alloc]
        for hook, recs in per_hook.items():
            attrs_common = {
                k: recs[0][k]
                for k in ("driver", "variant", "backend", "node")
                if isinstance(recs[0].get(k), str)
            }
            for rec in recs:
                attrs = dict(attrs_common, alloc=alloc)
                if isinstance(rec.get("task"), str):
                    attrs["task"] = rec["task"]
                host = rec.get("node") if isinstance(rec.get("node"), str) else ""
                for name, t in ((f"{hook} start", rec["t_ns"]), (f"{hook} end", rec["end_ns"])):
                    tl["events"].append(
                        {"t_ns": t + offset_ns, "source": "hook", "host": host, "name": name,
                         "attrs": attrs}
                    )
            start = min(r["t_ns"] for r in recs) + offset_ns
            end = max(r["end_ns"] for r in recs) + offset_ns
            have = tl["phases"].get(hook)
            if have is not None and have.get("source") != "hook":
                continue  # a wire phase of that name (Nova's spawn) stays; checked against it
            tl["phases"][hook] = _phase(start, end, f"{hook} start", f"{hook} end", "hook")
        _sort_events(tl)
    return _merge_warnings(bad_hooks=bad, unknown_hooks=unknown)


def merge_vim_events(
    timelines: list[dict[str, Any]], events: Iterable[dict[str, Any]]
) -> list[str]:
    """Add the VIM's own events to the timelines of their subject; derive download_artifact.

    Returns warning lines. Only events whose "subject" is a timeline's instance are used.
    """
    by_id = {t["instance"]: t for t in timelines}
    bad = 0
    for rec in events:
        if not _event_ok(rec):
            bad += 1
            continue
        subject, name, t = rec["subject"], rec["name"], _int(rec["t_ns"])
        tl = by_id.get(subject)
        if tl is None:
            continue
        attrs: dict[str, Any] = {}
        if isinstance(rec.get("task"), str):
            attrs["task"] = rec["task"]
        end = _int(rec.get("end_ns"))
        if end is not None:
            attrs["end_ns"] = end
        ev_name = TASK_PREFIX + name if tl.get("vim") == "nomad" else name
        tl["events"].append(
            {"t_ns": t, "source": "vim", "host": "", "name": ev_name, "attrs": attrs}
        )
    for tl in timelines:
        _sort_events(tl)
        if tl.get("vim") == "nomad":
            _download_artifact(tl)
    return _merge_warnings(bad_events=bad)


def _download_artifact(tl: dict[str, Any]) -> None:
    """download_artifact = "Downloading Artifacts" -> the next task event of the same task, or
    the driver's init_environment start (StartTask entry) when a hook says it came earlier.

    Nomad emits no event when the artifact hook ends, and a driver's own task events arrive
    only after StartTask (client/allocrunner/taskrunner/task_runner.go runs the prestart hooks,
    artifacts among them, then the driver): without the hook bound the phase would enclose
    the whole driver breakdown. Run after merge_hooks.
    """
    starts = [e for e in tl["events"] if e["source"] == "hook"
              and e["name"] == "init_environment start"]
    for source in ("vim", "capture"):
        per_task: dict[str, list[dict[str, Any]]] = {}
        for e in tl["events"]:
            if e["source"] == source and e["name"].startswith(TASK_PREFIX):
                per_task.setdefault(e["attrs"].get("task", ""), []).append(e)
        for evs in per_task.values():
            for i, e in enumerate(evs):
                if e["name"] == TASK_PREFIX + DOWNLOAD and i + 1 < len(evs):
                    end = evs[i + 1]
                    end_source = source
                    later = [h for h in starts if e["t_ns"] <= h["t_ns"] < end["t_ns"]]
                    if later:
                        end, end_source = later[0], f"{source}+hook"
                    tl["phases"]["download_artifact"] = _phase(
                        e["t_ns"], end["t_ns"], e["name"], end["name"], end_source
                    )
                    return


# -- cross-checks ---------------------------------------------------------------------------


def _first(tl: dict[str, Any], name: str, source: str) -> dict[str, Any] | None:
    for e in tl["events"]:
        if e["name"] == name and e["source"] == source:
            return e
    return None


def _check(
    checks: list[dict[str, Any]],
    name: str,
    rule: str,
    capture_ns: int | None,
    other_ns: int | None,
    other: str,
    tol_ns: float,
) -> None:
    if capture_ns is None or other_ns is None:
        return
    diff = other_ns - capture_ns
    if rule == "equal":
        ok = abs(diff) <= tol_ns
    elif rule == "after":
        ok = diff >= -tol_ns
    else:  # before
        ok = diff <= tol_ns
    checks.append(
        {
            "check": name,
            "rule": rule,
            "capture_ns": capture_ns,
            "other_ns": other_ns,
            "other": other,
            "diff_ms": round(diff / 1e6, 3),
            "ok": ok,
        }
    )


def _phase_end(tl: dict[str, Any], name: str) -> int | None:
    p = tl["phases"].get(name)
    return p["end_ns"] if p and p.get("source") == "capture" else None


def _phase_start(tl: dict[str, Any], name: str) -> int | None:
    p = tl["phases"].get(name)
    return p["start_ns"] if p and p.get("source") == "capture" else None


def _nomad_checks(
    tl: dict[str, Any], req: dict[str, Any] | None, tol: float
) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    # 1. the same task events seen on the wire (Node.UpdateAlloc) and through the API
    vim_ev = {
        (e["attrs"].get("task"), e["name"]): e["t_ns"]
        for e in tl["events"]
        if e["source"] == "vim" and e["name"].startswith(TASK_PREFIX)
    }
    for e in tl["events"]:
        if e["source"] != "capture" or not e["name"].startswith(TASK_PREFIX):
            continue
        other = vim_ev.get((e["attrs"].get("task"), e["name"]))
        _check(checks, f"{e['name']} (wire vs API)", "equal", e["t_ns"], other,
               "vim-events", tol)
    # 2. the VIM's own events fall inside the wire phases that contain them
    received = vim_ev.get(next((k for k in vim_ev if k[1] == TASK_PREFIX + "Received"), None))
    started = vim_ev.get(next((k for k in vim_ev if k[1] == TASK_PREFIX + "Started"), None))
    pull = _phase_start(tl, "instantiation")
    running = _phase_end(tl, "instantiation")
    _check(checks, "task Received after the client pulled the allocation", "after", pull,
           received, "vim-events", tol)
    _check(checks, "task Started before the server got running", "before", running, started,
           "vim-events", tol)
    # 3. the pusher's own observations
    if req:
        reg_reply = _phase_end(tl, "api")
        _check(checks, "pusher saw the register reply when the server sent it", "equal",
               reg_reply, _int(req.get("t_registered_ns")), "requests.jsonl", tol)
        _check(checks, "pusher saw running after the server got it", "after", running,
               _int(req.get("t_running_ns")), "requests.jsonl", tol)
        stop_end = _phase_end(tl, "stop")
        _check(checks, "pusher saw the allocation gone after its terminal report", "after",
               stop_end, _int(req.get("t_gone_ns")), "requests.jsonl", tol)
    # 4. hooks inside the instantiation they belong to
    for hook in HOOK_NAMES:
        p = tl["phases"].get(hook)
        if p and p.get("source") == "hook" and hook != "clean":
            _check(checks, f"hook {hook} after the client pulled the allocation", "after",
                   pull, p["start_ns"], "hooks.jsonl", tol)
            _check(checks, f"hook {hook} before the server got running", "before", running,
                   p["end_ns"], "hooks.jsonl", tol)
    return checks


def _nova_checks(
    tl: dict[str, Any], req: dict[str, Any] | None, tol: float
) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    # Instance action event times have a second resolution (MariaDB DATETIME): 1 s slack.
    coarse = tol + 1e9
    action = _first(tl, "compute__do_build_and_run_instance", "vim")
    compute = tl["phases"].get("compute")
    if action is not None and compute is not None:
        _check(checks, "instance action event start vs compute start", "equal",
               compute["start_ns"], action["t_ns"], "vim-events", coarse)
        end = _int(action["attrs"].get("end_ns"))
        _check(checks, "instance action event finish vs compute end", "equal",
               compute["end_ns"], end, "vim-events", coarse)
    # the driver's own spawn (hooks.jsonl) inside the wire's spawn (task_state spawning ->
    # vm_state active), and its steps inside compute
    wire_spawn = tl["phases"].get("spawn")
    hook_ev = {e["name"]: e["t_ns"] for e in tl["events"] if e["source"] == "hook"}
    if wire_spawn is not None and wire_spawn.get("source") == "capture":
        _check(checks, "driver spawn hook starts inside the wire spawn phase", "after",
               wire_spawn["start_ns"], hook_ev.get("spawn start"), "hooks.jsonl", tol)
        _check(checks, "driver spawn hook ends inside the wire spawn phase", "before",
               wire_spawn["end_ns"], hook_ev.get("spawn end"), "hooks.jsonl", tol)
    if req:
        api = tl["phases"].get("api")
        _check(checks, "client saw the 202 when nova-api sent it", "equal",
               api["end_ns"] if api else None, _int(req.get("t_registered_ns")),
               "requests.jsonl", tol)
        ready = _phase_end(tl, "compute")
        _check(checks, "client saw ACTIVE after compute set vm_state active", "after", ready,
               _int(req.get("t_running_ns")), "requests.jsonl", tol)
    return checks


class Enricher:
    """merge_hooks, merge_vim_events and crosscheck applied to one timeline at a time, as
    the analyzer emits them (streaming; the same result as the list functions on all).

    The records are indexed by instance once; `apply(tl)` merges and cross-checks `tl` in
    place and returns its cross-check warning lines; `warnings()` at the end gives the
    bad / unknown record counts. `active`: whether any source was given (else apply only
    passes the timeline through, no "crosscheck" dict, as crosscheck is not called).
    """

    def __init__(
        self,
        hooks: Iterable[dict[str, Any]] = (),
        vim_events: Iterable[dict[str, Any]] = (),
        requests: Iterable[dict[str, Any]] = (),
        hooks_offset_ns: int = 0,
        tolerance_ms: float = DEFAULT_TOLERANCE_MS,
    ) -> None:
        self.offset_ns = hooks_offset_ns
        self.tolerance_ms = tolerance_ms
        self.hooks: dict[str, list[dict[str, Any]]] = {}
        self.bad_hooks = 0
        n_hooks = n_events = 0
        for rec in hooks:
            n_hooks += 1
            if "probe" in rec:
                continue
            alloc = _hook_instance(rec)
            if alloc is None:
                self.bad_hooks += 1
                continue
            self.hooks.setdefault(alloc, []).append(rec)
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.bad_events = 0
        for rec in vim_events:
            n_events += 1
            if not _event_ok(rec):
                self.bad_events += 1
                continue
            self.events.setdefault(rec["subject"], []).append(rec)
        requests = list(requests)
        self.requests = _by_instance(requests)
        self.with_hooks, self.with_events = bool(n_hooks), bool(n_events)
        self.active = bool(n_hooks or n_events or requests)

    def apply(self, tl: dict[str, Any]) -> list[str]:
        """Merge the hooks and VIM events of `tl`'s instance into it and cross-check it."""
        inst = tl["instance"]
        if self.with_hooks:
            recs = self.hooks.pop(inst, None)
            if recs:
                merge_hooks([tl], recs, self.offset_ns)
        if self.with_events:
            merge_vim_events([tl], self.events.pop(inst, ()))
        if not self.active:
            return []
        req = self.requests.get(inst)
        return crosscheck([tl], [req] if req else [], self.tolerance_ms)

    def warnings(self) -> list[str]:
        """The merge warnings of merge_hooks and merge_vim_events, for all records."""
        return _merge_warnings(self.bad_hooks, sum(len(v) for v in self.hooks.values()),
                               self.bad_events)


def crosscheck(
    timelines: list[dict[str, Any]],
    requests: Iterable[dict[str, Any]] = (),
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
) -> list[str]:
    """Add the "crosscheck" dict (module docstring) to each timeline; returns warning lines.

    Run after merge_vim_events / merge_hooks. `requests` are requests.jsonl records, matched
    by alloc_id / server_id (or instance) to the timelines.
    """
    tol = tolerance_ms * 1e6
    by_instance = _by_instance(requests)
    warnings: list[str] = []
    for tl in timelines:
        req = by_instance.get(tl["instance"])
        if tl.get("vim") == "nova":
            checks = _nova_checks(tl, req, tol)
        else:
            checks = _nomad_checks(tl, req, tol)
        bad = [c for c in checks if not c["ok"]]
        tl["crosscheck"] = {
            "tolerance_ms": tolerance_ms,
            "checks": checks,
            "disagreements": len(bad),
        }
        for c in bad:
            line = (
                f"crosscheck: {c['check']}: {c['other']} differs from the capture by "
                f"{c['diff_ms']} ms (rule {c['rule']}, tolerance {tolerance_ms} ms)"
            )
            tl["issues"].append(line)
            warnings.append(f"{tl['vim']} {tl['instance']}: {line}")
    return warnings
