"""The campaign engine shared by every VIM: leftovers, manifest, capture, progress, interruption.

A campaign (docs/architecture.md) runs instantiations through one VIM's pusher and records them
into a run directory. What does not depend on the VIM lives here:
- leftovers of earlier campaigns on the same target are deleted first, and counted in the
  terminal and the manifest (`leftovers_purged`);
- the manifest gets the run directory's schema version ("schema": "vimprof-run/1", see
  vimprof/schema.py), the vimprof version, the start instant and the campaign's pid at the start
  (`vimprof analyze --follow` watches both), the end instant, failures, tcpdump's counts and
  `interrupted` / `interrupt_signal` at the end;
- runs go one after another under a progress bar; each VIM module supplies one run's body;
- SIGINT, SIGTERM and SIGHUP (vimprof.interrupts) end the loop: the pusher has deleted the
  in-flight instance, the capture is closed, the manifest says which signal, and what was
  recorded stays readable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import vimprof
from vimprof import interrupts, rundir
from vimprof.capture import Capture
from vimprof.rundir import JsonlWriter, RunDir, now_ns


def progress_bar(console: Console) -> Progress:
    """A campaign's progress: label, bar, runs done of all, elapsed time, the last outcome
    (task field `last`)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[last]}"), console=console,
                    transient=False)


def purge_leftovers(console: Console, found: Iterable[str], purge: Callable[[str], Any],
                    noun: str) -> int:
    """Delete what earlier campaigns left (`found`: ids the pusher identified by vimprof's tag)
    with `purge`; says how many in the terminal and returns the count for the manifest."""
    ids = list(found)
    for one in ids:
        with interrupts.cleaning(f"deleting {noun} {one} left by an earlier campaign"):
            purge(one)
    if ids:
        console.print(f"deleted {len(ids)} {noun}(s) left by an earlier campaign: "
                      + ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else ""))
    return len(ids)


@dataclass
class Outputs:
    """The run directory's JSON-lines files a run writes into."""

    requests: JsonlWriter
    vim_events: JsonlWriter
    hooks: JsonlWriter


# One run's body: (index, outputs) -> (ok, the progress line's last outcome).
RunBody = Callable[[int, Outputs], tuple[bool, str]]


def start(run: RunDir, **manifest: Any) -> None:
    """Write the campaign's manifest: `manifest` plus the run directory's schema version,
    vimprof's version, the start instant and the pid."""
    run.update_manifest(schema=rundir.SCHEMA_VERSION, vimprof_version=vimprof.__version__,
                        **manifest, start_ns=now_ns(), pid=os.getpid())


def run_sequential(run: RunDir, console: Console, label: str, runs: int, body: RunBody, *,
                   capture: Capture | None, what: str,
                   begin: Callable[[], Any] | None = None,
                   finish: Callable[[Outputs], None] | None = None,
                   end_fields: Callable[[], dict[str, Any]] | None = None) -> int:
    """Run `body` for runs 0..runs-1 one after another; returns the number of failed runs.

    `begin()` runs first, inside the interruptible part; `finish(outputs)` runs after the
    loop, also when interrupted (records that arrive late);
    `end_fields()` adds to the end manifest. `what` names the in-flight instance for the
    interruption message ("in-flight job purged"). Raises KeyboardInterrupt (after the clean-up
    and the end manifest) when a signal stopped the campaign.
    """
    failures = 0
    interrupted = False
    try:
        with run.writer(rundir.REQUESTS) as requests_out, \
                run.writer(rundir.VIM_EVENTS) as events_out, \
                run.writer(rundir.HOOKS) as hooks_out, \
                progress_bar(console) as progress:
            out = Outputs(requests_out, events_out, hooks_out)
            task = progress.add_task(label, total=runs, last="")
            try:
                if begin is not None:
                    begin()
                for i in range(runs):
                    ok, last = body(i, out)
                    failures += not ok
                    progress.update(task, advance=1, last=last)
            finally:
                if finish is not None:
                    with interrupts.cleaning("collecting the last hook and event records"):
                        finish(out)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        _end(run, capture, interrupted, failures, end_fields)
    _raise_if(interrupted, console, what, run)
    return failures


def _end(run: RunDir, capture: Capture | None, interrupted: bool, failures: int,
         end_fields: Callable[[], dict[str, Any]] | None, **more: Any) -> None:
    """Close the capture and write the manifest's end, with no signal cutting in."""
    with interrupts.shielded(), interrupts.cleaning("closing the capture and the manifest"):
        if capture:
            capture.stop()
        extra = end_fields() if end_fields else {}
        run.update_manifest(end_ns=now_ns(), interrupted=interrupted,
                            interrupt_signal=interrupts.received() if interrupted else None,
                            failures=failures, capture_stats=capture.stats if capture else None,
                            **more, **extra)


def _raise_if(interrupted: bool, console: Console, what: str, run: RunDir) -> None:
    if interrupted:
        sig = interrupts.received() or "SIGINT"
        console.print(f"[yellow]interrupted ({sig}): {what}; partial run kept in {run.path}")
        raise KeyboardInterrupt


def campaign_fields(process: Any, spec: Any) -> dict[str, Any]:
    """The manifest's campaign mode and, for an arrival process or explicit deletion, their
    settings (`spec` has max_in_flight, duration_s, lifetime_s and keep)."""
    out: dict[str, Any] = {"mode": "sequential" if process is None else
                           "open" if process.open else "closed"}
    if process is not None:
        out.update(arrival=process.describe(), max_in_flight=spec.max_in_flight,
                   duration_s=spec.duration_s)
    if spec.lifetime_s or spec.keep:
        out.update(lifetime_s=spec.lifetime_s, keep=spec.keep)
    return out


# One finished request's record (from the pusher, in a worker thread) -> written into the
# outputs by the sink thread; returns (ok, the progress line's last outcome).
Write = Callable[[dict[str, Any], Outputs], tuple[bool, str]]


def run_arrivals(run: RunDir, console: Console, label: str, process: Any,
                 fire: Callable[[int, int], dict[str, Any]], write: Write, *,
                 capture: Capture | None, what: str, max_in_flight: int, max_runs: int,
                 max_duration_s: float | None = None,
                 finish: Callable[[Outputs], None] | None = None,
                 end_fields: Callable[[], dict[str, Any]] | None = None) -> int:
    """Run requests per arrival `process` (vimprof.campaigns.arrivals) through the open-loop
    engine (vimprof.campaigns.openloop): `fire(i, intended_ns)` performs run i on a worker
    thread and returns its record; `write(record, outputs)` files it (one thread). Returns
    the number of failed runs. The manifest's end gets `load` (the engine's summary: offered
    and achieved rate in requests/s, send lag in ms, stop reason) beside what run_sequential
    writes. KeyboardInterrupt after the clean-up when a signal stopped it: in-flight requests
    finish (and delete their instances) first.
    """
    from vimprof.campaigns.openloop import run_open_loop

    failures = 0
    interrupted = False
    summary = None
    try:
        with run.writer(rundir.REQUESTS) as requests_out, \
                run.writer(rundir.VIM_EVENTS) as events_out, \
                run.writer(rundir.HOOKS) as hooks_out, \
                progress_bar(console) as progress:
            out = Outputs(requests_out, events_out, hooks_out)
            task = progress.add_task(label, total=max_runs, last="")

            def sink(rec: dict[str, Any]) -> None:
                nonlocal failures
                ok, last = write(rec, out)
                failures += not ok
                progress.update(task, advance=1, last=last)

            def on_progress(p: Any) -> None:
                lag = "-" if p.lag_p99_ms is None else f"{p.lag_p99_ms:.1f}"
                progress.update(task, last=f"in flight {p.in_flight}, send lag p99 {lag} ms")

            try:
                summary = run_open_loop(process, fire, sink, max_in_flight=max_in_flight,
                                        max_runs=max_runs, max_duration_s=max_duration_s,
                                        on_progress=on_progress)
            finally:
                if finish is not None:
                    with interrupts.cleaning("collecting the last hook and event records"):
                        finish(out)
        interrupted = summary.interrupted
    except KeyboardInterrupt:
        interrupted = True
    finally:
        _end(run, capture, interrupted, failures, end_fields,
             load=summary.as_manifest() if summary else None)
    _raise_if(interrupted, console, what, run)
    if summary.stopped_reason == "max-in-flight":
        console.print(f"[yellow]stopped: more than {max_in_flight} instances in flight (the VIM "
                      f"falls behind the offered load); {summary.done} run(s) measured and kept")
    elif summary.error:
        console.print(f"[red]stopped: {summary.error}: {summary.exception}")
    return failures
