"""Live mode: analyse a run's capture while `vimprof capture` is still writing it.

`vimprof analyze RUN --follow` (analyze_run_follow(run, Follower(run))) reads
run/capture.pcap as tcpdump appends to it (tcpdump -U writes whole packets as they come,
vimprof/capture.py), hands each instance's timeline to a callback as soon as the instance is
finished (nomad_phases "Streaming": Nomad allocations terminal and purged, Nova servers gone)
and, once the campaign is over, writes the same timelines.jsonl an offline `vimprof analyze`
would: the live pass spools the raw timelines, and requests.jsonl, hooks.jsonl and
vim-events.jsonl, complete only at the end, are merged and cross-checked then.

The campaign is over when manifest.json has "end_ns" (written after the capture stopped,
also on Ctrl-C of the campaign) or when the campaign process ("pid" in the manifest) is gone
(killed). `Follower.stop()` (Ctrl-C of the follower) ends the reading at once: what was read
is analysed and written (a partial result, "capture truncated" if it stopped mid-packet).

The capture is read as a growing file (sources/growing.py FollowFile: read(n) blocks in
short sleeps until n bytes exist or the writer is done). The pipeline's readers open capture
paths themselves, so the Follower feeds one through a named pipe (FIFO) in a private
temporary directory: a thread copies the FollowFile's bytes into it, and the analysis reads
the pipe as a capture.

The analyzer's top: live mode over the pipeline (vimprof/analyzer/__init__.py). It imports
pipeline.analyze_sources, enrich and sink, and none of them imports it: offline analysis
is pipeline.analyze_run, live analysis is analyze_run_follow here.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vimprof import interrupts
from vimprof.analyzer.decoders.ports import Ports
from vimprof.analyzer.enrich import (
    DEFAULT_TOLERANCE_MS,
    MAX_CROSSCHECK_WARNINGS,
    Enricher,
    belongs,
    job_runs_of,
    read_jsonl,
)
from vimprof.analyzer.pipeline import analyze_sources
from vimprof.analyzer.sink import AnalysisResult, TimelineSpool
from vimprof.analyzer.sources.growing import POLL_S, FollowFile
from vimprof.errors import VimprofError
from vimprof.phases import NOMAD, NOVA
from vimprof.rundir import CAPTURE, HOOKS, MANIFEST, REQUESTS, TIMELINES, VIM_EVENTS, RunDir

WAIT_S = 300.0  # how long to wait for the run directory / capture to appear


class Follower:
    """Follows `run`'s capture during its campaign (see the module docstring).

    `on_timeline(tl)`: each instance's timeline (raw: no "run", hooks or cross-checks yet)
    as soon as it is finished; `on_progress(line)`: a progress line every `progress_s`
    seconds (bytes read, instances so far), from a helper thread. `wait_s`: how long to wait
    for the run directory's capture to appear before giving up (VimprofError).
    """

    def __init__(
        self,
        run: RunDir,
        on_timeline: Callable[[dict[str, Any]], None] | None = None,
        on_progress: Callable[[str], None] | None = None,
        *,
        poll_s: float = POLL_S,
        wait_s: float = WAIT_S,
        progress_s: float = 5.0,
    ) -> None:
        self.run = run
        self.on_timeline = on_timeline
        self.on_progress = on_progress
        self.poll_s, self.wait_s, self.progress_s = poll_s, wait_s, progress_s
        self.stopped = threading.Event()
        self.instances = 0
        self.interrupted = False
        self.file: FollowFile | None = None
        self._dir: str | None = None
        self._pump: threading.Thread | None = None
        self._error: BaseException | None = None
        self._started = time.monotonic()

    # -- the campaign's state --------------------------------------------------------------

    def campaign_over(self) -> bool:
        """manifest.json says the campaign ended, or its process is gone."""
        try:
            m = json.loads(self.run.file(MANIFEST).read_text())
        except (OSError, ValueError):
            m = {}
        if not isinstance(m, dict):
            return False
        if "end_ns" in m:
            return True
        pid = m.get("pid")
        if isinstance(pid, int) and pid > 0:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False

    def _done(self) -> bool:
        if self.stopped.is_set() or self.campaign_over():
            return True
        # nothing to follow yet and nobody writing: give up after wait_s
        cap = self.run.file(CAPTURE)
        return not cap.exists() and time.monotonic() - self._started > self.wait_s

    def stop(self) -> None:
        """Stop reading now (Ctrl-C); the analysis finishes with what was read."""
        self.interrupted = True
        self.stopped.set()

    # -- the pipe --------------------------------------------------------------------------

    def start(self) -> Path:
        """Start copying the growing capture into a named pipe; returns the pipe's path
        (read it as a capture file, once)."""
        self._dir = tempfile.mkdtemp(prefix="vimprof-follow-")
        fifo = Path(self._dir) / CAPTURE
        os.mkfifo(fifo, 0o600)
        self.file = FollowFile(self.run.file(CAPTURE), self._done, self.poll_s, self.stopped)
        self._pump = threading.Thread(target=self._copy, args=(fifo,), daemon=True,
                                      name="vimprof-follow")
        self._pump.start()
        return fifo

    def _copy(self, fifo: Path) -> None:
        assert self.file is not None
        last = time.monotonic()
        try:
            with open(fifo, "wb", buffering=0) as out:
                while chunk := self.file.read1(1 << 16):
                    out.write(chunk)
                    if self.on_progress and time.monotonic() - last >= self.progress_s:
                        last = time.monotonic()
                        self.on_progress(self.progress())
        except BrokenPipeError:
            pass  # the reader went away (an error in the analysis): nothing to feed
        except BaseException as e:  # noqa: BLE001 - reported by close()
            self._error = e

    def progress(self) -> str:
        """One line: bytes of the capture read, instances finished so far."""
        n = self.file.bytes_read if self.file else 0
        return (f"following {self.run.file(CAPTURE)}: {n / 1e6:.1f} MB read, "
                f"{self.instances} instance(s) finished")

    def close(self) -> None:
        """Stop the copy thread (if the analysis did not read the pipe to its end) and
        remove the pipe. Raises what the copy thread raised, if anything."""
        self.stopped.set()
        if self._pump is not None and self._dir is not None:
            fifo = Path(self._dir) / CAPTURE
            # a writer still waiting for a reader to open the pipe: open it to release it
            with contextlib.suppress(OSError):
                fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
                self._pump.join(timeout=5)
                os.close(fd)
            self._pump.join(timeout=5)
        if self.file is not None:
            self.file.close()
        if self._dir is not None:
            with contextlib.suppress(OSError):
                (Path(self._dir) / CAPTURE).unlink()
                os.rmdir(self._dir)
            self._dir = None
        if self._error is not None:
            raise VimprofError(f"following {self.run.file(CAPTURE)} failed: {self._error}")

    def timeline(self, tl: dict[str, Any]) -> None:
        if not self._ours(tl):
            return  # another campaign's allocation a client still reports: not news here
        self.instances += 1
        if self.on_timeline is not None:
            self.on_timeline(tl)

    def _ours(self, tl: dict[str, Any]) -> bool:
        """A Nomad timeline belongs to this campaign when its job carries the campaign's name
        (vimprof-LABEL-ID-NNNN, vimprof.campaigns.nomad); unknown until the manifest says."""
        if tl.get("vim") != "nomad":
            return True
        try:
            m = json.loads(self.run.file(MANIFEST).read_text())
            cid = m["campaign"]["id"]
            label = m["label"]
        except (OSError, ValueError, KeyError, TypeError):
            return True
        return str(tl.get("job") or "").startswith(f"vimprof-{label}-{cid}-")


def wait_for_run(ref: str, root: Path, wait_s: float = WAIT_S, poll_s: float = 0.2) -> RunDir:
    """RunDir.resolve, waiting up to `wait_s` for a campaign to create the directory (it may
    bring a lab up first). Raises VimprofError as RunDir.resolve after that."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return RunDir.resolve(ref, root)
        except VimprofError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(poll_s)


def describe(tl: dict[str, Any]) -> str:
    """One line for an instance: vim, id, job, total ms and the main (stack) phases."""
    model = NOVA if tl.get("vim") == "nova" else NOMAD
    ph = tl.get("phases") or {}

    def ms(name: str) -> str:
        p = ph.get(name)
        return f"{p['ms']:.1f}" if isinstance(p, dict) and "ms" in p else "-"

    parts = ", ".join(f"{n} {ms(n)}" for n in model.stack)
    flag = "" if tl.get("complete") else " (incomplete)"
    return (f"{model.vim} {tl.get('instance')} job {tl.get('job')}: total {ms(model.total)} ms "
            f"({parts}){flag}")


def analyze_run_follow(
    run: RunDir,
    follower: Follower,
    extra_captures: Iterable[Any] = (),
    *,
    hooks_offset_ns: int = 0,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
    ports: Ports | None = None,
) -> AnalysisResult:
    """analyze_run in live mode (module docstring); returns its AnalysisResult.

    SIGINT, SIGTERM or SIGHUP (from the main thread: vimprof.interrupts) stops the following
    and still writes the timelines of what was read; a further signal only says so.
    `ports`: as analyze_run (default: those in the run's manifest).
    """
    ports = ports or Ports.of_run(run)
    out = run.file(TIMELINES)
    raw = TimelineSpool(out)
    fifo = follower.start()
    try:
        # the first SIGINT/SIGTERM/SIGHUP stops the reading; the timelines are still written
        with interrupts.handling(), interrupts.stop_with(follower.stop):
            res = analyze_sources(run, [fifo, *extra_captures], hooks_offset_ns=hooks_offset_ns,
                                  tolerance_ms=tolerance_ms, on_timeline=follower.timeline,
                                  enrich=False, spool=raw, ports=ports)
    except BaseException:
        raw.discard()
        raise
    finally:
        follower.close()
    # the campaign is over: its side files are complete now
    requests, bad_req = read_jsonl(run.file(REQUESTS))
    hooks, bad_hooks = read_jsonl(run.file(HOOKS))
    vim_events, bad_ev = read_jsonl(run.file(VIM_EVENTS))
    job_runs = job_runs_of(requests)
    enricher = Enricher(hooks, vim_events, requests, hooks_offset_ns, tolerance_ms)
    final = TimelineSpool(out, lambda t: belongs(t, job_runs))
    checks: list[str] = []
    more = 0
    try:
        for tl in raw.records():
            if tl.get("vim") == "nova":
                tl["run"] = job_runs.get(tl["instance"])
            else:
                tl["run"] = job_runs.get(tl["job"]) if tl.get("job") is not None else None
            for w in enricher.apply(tl):
                if len(checks) < MAX_CROSSCHECK_WARNINGS:
                    checks.append(w)
                else:
                    more += 1
            final.add(tl)
        final.commit()
    finally:
        raw.discard()
        final.discard()
    warnings = [w.replace(str(fifo), str(run.file(CAPTURE))) for w in res.warnings]
    for name, bad in ((REQUESTS, bad_req), (HOOKS, bad_hooks), (VIM_EVENTS, bad_ev)):
        if bad:
            warnings.append(f"{name}: {bad} line(s) that are not JSON objects skipped")
    warnings.extend(enricher.warnings())
    warnings.extend(checks)
    if more:
        warnings.append(f"crosscheck: {more} more disagreement(s); see the timelines' issues")
    if follower.interrupted:
        warnings.insert(0, "interrupted: timelines of the capture read so far written")
    res.counts.update(final.counts)
    res.warnings = warnings
    res._timelines = None
    return res


class LiveAnalysis:
    """`vimprof capture --live`: the live analysis in a thread of the campaign's process.

    `start()` after the run directory was created (empty), `finish()` after the campaign
    returned (it wrote manifest end_ns): waits for the analysis and returns its
    AnalysisResult, or raises what it raised. `abort()` when the campaign failed before
    writing its manifest.
    """

    def __init__(self, run: RunDir, follower: Follower, **kw: Any) -> None:
        self.run, self.follower, self.kw = run, follower, kw
        self.result: AnalysisResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True, name="vimprof-live")

    def _main(self) -> None:
        try:
            self.result = analyze_run_follow(self.run, self.follower, **self.kw)
        except BaseException as e:  # noqa: BLE001 - handed to finish()
            self.error = e

    def start(self) -> LiveAnalysis:
        self._thread.start()
        return self

    def finish(self, timeout_s: float = 600.0) -> AnalysisResult | None:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self.follower.stop()
            self._thread.join(30)
        if self.error is not None:
            raise self.error
        return self.result

    def abort(self) -> None:
        self.follower.stop()
        self._thread.join(30)
