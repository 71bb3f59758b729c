"""A sweep: every variant x level of a campaign file, one run directory each, and sweep.json.

    runs/<name>/
      sweep.json          what ran, per variant and level: run directory, runs, failures,
                          status; rewritten atomically after every level
      <variant>-<ii>/     one run directory per (variant, level index), as `vimprof capture`
                          writes it, plus campaign.yaml (the campaign file)

`run_sweep(cf, console, runs_dir, force)` brings up what each campaign needs through the
campaign modules (the Nomad lab per variant: `campaigns.nomad.prepare`; the Nova lab:
`campaigns.nova.cli_capture`), runs the levels of a variant in order, then the next variant
(a lab restarts at most once per variant), and analyses each run that has a capture.

Interruption (Ctrl-C, SIGTERM, SIGHUP: vimprof.interrupts): the running level's campaign
deletes its in-flight instances and closes its run directory itself; the sweep marks that
level "interrupted" in sweep.json, stops, and re-raises. Every level measured so far stays
on disk and in sweep.json.

Failures under load: after each level, when more than `failure_threshold` of its runs
failed, `on_failure: stop` ends the sweep (sweep.json: status "stopped" and why) and
`continue` goes on with a warning. A level whose campaign could not run (VimprofError: the
VIM unreachable ...) is "failed: MESSAGE" and counts as a level above the threshold.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from vimprof import interrupts, rundir
from vimprof.campaigns.file import CampaignFile, Level, Variant, token
from vimprof.errors import VimprofError
from vimprof.rundir import RunDir

SCHEMA = "vimprof-sweep/1"
SWEEP_JSON = "sweep.json"
CAMPAIGN_COPY = "campaign.yaml"


@dataclass
class SweepResult:
    """What a sweep did: its directory, sweep.json's content, and how it ended."""

    path: Path
    doc: dict[str, Any]
    status: str = "running"  # done | stopped | interrupted
    reason: str | None = None

    @property
    def sweep_json(self) -> Path:
        return self.path / SWEEP_JSON

    def entries(self) -> list[tuple[str, dict[str, Any]]]:
        """(variant, level entry) in the order they ran."""
        return [(v, e) for v, es in self.doc["variants"].items() for e in es]

    @property
    def ok(self) -> bool:
        return self.status == "done" and all(e["status"] == "done" for _, e in self.entries())


@dataclass
class _Outcome:
    run: RunDir | None = None
    failures: int = 0
    captured: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _write(result: SweepResult) -> None:
    """sweep.json, atomically (a reader never sees half of it)."""
    result.doc.update(status=result.status, reason=result.reason, updated_ns=time.time_ns())
    tmp = result.path / (SWEEP_JSON + ".tmp")
    tmp.write_text(json.dumps(result.doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, result.sweep_json)


def _copy_file(cf: CampaignFile, run_path: Path) -> None:
    if run_path.is_dir():
        (run_path / CAMPAIGN_COPY).write_text(cf.text, encoding="utf-8")


def _job_file(cf: CampaignFile) -> Path | None:
    job = cf.target.get("job")
    if not job:
        return None
    p = Path(job)
    return p if p.is_absolute() else cf.base_dir / p


def run_nomad_level(cf: CampaignFile, variant: Variant, level: Level, sweep_dir: Path,
                    label: str, force: bool, console: Console, out: _Outcome) -> None:
    """One Nomad campaign of the sweep into sweep_dir/label (`out` filled as it goes, so an
    interruption still knows the run directory)."""
    from vimprof.campaigns import nomad

    t = cf.target
    backend = variant.get("backend", "qemu")
    accel = (t.get("lab") or {}).get("accel") or t.get("accel", "auto")
    spec, target = nomad.prepare(
        console, label=label, runs=level.runs, nomad_addr=t.get("nomad_addr"),
        capture_iface=t.get("capture_iface"), kernel=t.get("kernel"), accel=accel,
        memory_mb=variant.get("memory_mb") or (32 if backend == "xl" else 128),
        timeout_s=cf.timeout_s, driver=variant.get("driver", "qemu"),
        nomad_variant=variant.get("nomad", "stock"), backend=backend,
        warmup_runs=cf.warmup, floor=variant.get("floor"), job_file=_job_file(cf),
        job_group=t.get("job_group"), token=token(cf) if not cf.lab else None,
        ca_cert=t.get("ca_cert"), client_cert=t.get("client_cert"),
        client_key=t.get("client_key"), tls_server_name=t.get("tls_server_name"),
        http_ports=tuple(t.get("http_ports", ())), rpc_ports=tuple(t.get("rpc_ports", ())),
        arrival=level.arrival, max_in_flight=level.max_in_flight,
        duration_s=level.duration_s, seed=level.seed)
    out.run = RunDir.create(label, sweep_dir, force=force)
    _copy_file(cf, out.run.path)
    out.captured = bool(target.capture_iface)
    out.failures = nomad.run_campaign(spec, target, out.run, console)


def run_nova_level(cf: CampaignFile, variant: Variant, level: Level, sweep_dir: Path,
                   label: str, force: bool, console: Console, out: _Outcome) -> None:
    """One Nova campaign of the sweep (sequential: the file refused other arrivals)."""
    from vimprof.campaigns import nova

    t = cf.target
    out.run = RunDir(sweep_dir / label)  # cli_capture creates it
    accel = (t.get("lab") or {}).get("accel") or t.get("accel", "auto")
    run, target = nova.cli_capture(
        console, runs=level.runs, label=label, runs_dir=sweep_dir, force=force,
        variant=variant.get("nova_driver", "stock"), accel=accel, os_cloud=t.get("os_cloud"),
        image=t.get("image"), flavor=t.get("flavor"), capture_iface=t.get("capture_iface"),
        poll_ms=cf.poll_ms, timeout_s=cf.timeout_s, warmup_runs=cf.warmup)
    out.run = run
    out.captured = bool(target.capture_iface)
    out.failures = len([r for r in run.read(rundir.REQUESTS) if not r.get("ok")])


LEVEL_RUNNERS = {"nomad": run_nomad_level, "nova": run_nova_level}


def _analyze(run: RunDir, console: Console) -> str:
    from vimprof.analyzer import analyze_run

    try:
        result = analyze_run(run)
    except VimprofError as exc:
        console.print(f"[yellow]warning:[/] analysis of {run.path} failed: {exc}")
        return f"failed: {exc}"
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    return result.summary()


def _measured(run: RunDir | None) -> tuple[int, int]:
    """(runs recorded, failed) from the run's requests.jsonl."""
    if run is None or not run.file(rundir.REQUESTS).exists():
        return 0, 0
    recs = run.read(rundir.REQUESTS)
    return len(recs), sum(1 for r in recs if not r.get("ok", False))


def prepare_dir(cf: CampaignFile, runs_dir: Path, force: bool) -> Path:
    """The sweep's directory; refuses one holding an earlier sweep unless `force`."""
    path = Path(runs_dir) / cf.name
    if (path / SWEEP_JSON).exists() and not force:
        raise VimprofError(f"{path} already holds a sweep ({SWEEP_JSON}); pick another name "
                           "or pass --force")
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_sweep(cf: CampaignFile, console: Console, runs_dir: Path,
              force: bool = False) -> SweepResult:
    """Run every variant and level of `cf`; see the module docstring. Returns the result
    (status done or stopped); raises KeyboardInterrupt after writing sweep.json when
    interrupted."""
    path = prepare_dir(cf, runs_dir, force)
    planned = cf.plan()
    result = SweepResult(path, {
        "schema": SCHEMA, "name": cf.name, "vim": cf.vim, "file": cf.source,
        "levels": [lv.label for lv in cf.levels], "on_failure": cf.on_failure,
        "failure_threshold": cf.failure_threshold, "started_ns": time.time_ns(),
        "variants": {v.name: [] for v in cf.variants}})
    (path / CAMPAIGN_COPY).write_text(cf.text, encoding="utf-8")
    _write(result)
    runner = LEVEL_RUNNERS[cf.vim]
    for n, (variant, level) in enumerate(planned, 1):
        label = cf.dir_name(variant, level)
        head = f"level {n}/{len(planned)} {level.label} ({variant.name})"
        console.print(f"[bold]{head}[/]: {label}")
        entry: dict[str, Any] = {"level": level.label, "arrival": level.arrival,
                                 "index": level.index, "run": label, "runs": 0,
                                 "failures": 0, "status": "running"}
        result.doc["variants"][variant.name].append(entry)
        _write(result)
        out = _Outcome()
        error = None
        try:
            runner(cf, variant, level, path, label, force, console, out)
        except KeyboardInterrupt:
            runs, failures = _measured(out.run)
            entry.update(runs=runs, failures=failures, status="interrupted")
            result.status = "interrupted"
            result.reason = (f"{interrupts.received() or 'SIGINT'} during level {n}/"
                             f"{len(planned)} ({label})")
            with interrupts.shielded():
                if out.run is not None:
                    _copy_file(cf, out.run.path)
                    _mark(out.run, cf, variant, level)
                _write(result)
            done = sum(1 for _, e in result.entries() if e["status"] == "done")
            console.print(f"[yellow]sweep interrupted at level {n}/{len(planned)}: "
                          f"{done} level(s) measured and kept; {result.sweep_json}")
            raise
        except VimprofError as exc:
            error = str(exc)
        if out.run is not None and out.run.path.is_dir():
            _copy_file(cf, out.run.path)
            _mark(out.run, cf, variant, level)
        runs, failures = _measured(out.run)
        entry.update(runs=runs, failures=max(failures, out.failures if error is None else 0),
                     status="done" if error is None else f"failed: {error}")
        if error is None and out.captured and cf.analyze:
            entry["analysis"] = _analyze(out.run, console)
        rate = 1.0 if error is not None else (entry["failures"] / runs if runs else 0.0)
        if error is not None:
            console.print(f"[red]{head}: failed: {error}")
        else:
            console.print(f"{head}: {runs} run(s), {entry['failures']} failed -> {out.run.path}")
        if rate > cf.failure_threshold:
            why = (f"level {n}/{len(planned)} {level.label} ({variant.name}): "
                   + (f"could not run: {error}" if error is not None else
                      f"{entry['failures']} of {runs} run(s) failed ({rate:.0%}), above "
                      f"the threshold {cf.failure_threshold:.0%}"))
            if cf.on_failure == "stop":
                result.status, result.reason = "stopped", why
                _write(result)
                console.print(f"[red]sweep stopped (on_failure: stop): {why}")
                return result
            console.print(f"[yellow]warning:[/] {why}; going on (on_failure: continue)")
        _write(result)
    result.status = "done"
    _write(result)
    return result


def _mark(run: RunDir, cf: CampaignFile, variant: Variant, level: Level) -> None:
    """The run's manifest says which sweep, variant and level it belongs to."""
    if run.file(rundir.MANIFEST).exists():
        run.update_manifest(sweep={"name": cf.name, "variant": variant.name,
                                   "variant_options": variant.options, "level": level.label,
                                   "index": level.index, "file": CAMPAIGN_COPY})


def report_hook(result: SweepResult, console: Console | None = None) -> None:
    """The end of a sweep. For now: where sweep.json is and a `vimprof compare` to try.

    INTEGRATION POINT: the load-curve report (built separately) plugs in here; it gets
    `result` (result.sweep_json, result.entries()) and writes its report beside sweep.json.
    """
    console = console or Console(highlight=False, soft_wrap=True)
    console.print(f"sweep {result.doc['name']}: {result.status}"
                  + (f" ({result.reason})" if result.reason else "") + f"; {result.sweep_json}")
    runs = [result.path / e["run"] for _, e in result.entries() if e["status"] == "done"]
    for _, e in result.entries():
        console.print(f"  {e['run']}: {e['level']}, {e['runs']} run(s), {e['failures']} "
                      f"failed, {e['status']}")
    if len(runs) >= 2:
        console.print(f"compare two levels: vimprof compare {runs[0]} {runs[-1]}")
