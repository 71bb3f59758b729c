"""The load engine: requests sent on an arrival process's schedule, VIM-agnostic.

`run_open_loop(process, fire, sink, ...)` runs one campaign's requests:
- open loop (rate, poisson, burst, ramps: vimprof.campaigns.arrivals): a scheduler thread sends
  each request at its intended instant whether or not earlier ones have finished, on a thread
  pool of at most `max_in_flight` workers. It hands each request to a worker LEAD_NS (2 ms)
  ahead and the worker sleeps until the instant itself, so the hand-over between threads is
  off the send's critical path (the requests of a burst start together, not one by one);
- closed loop (closed:C, sequential = closed:1): C client threads, each sending its next request
  as soon as its previous one returned.

`fire(i, intended_ns) -> dict` performs request i (for a campaign: one whole instantiation with a
pusher, blocking, clean-up included) and returns its record; the engine assumes nothing else of
it. The engine adds its own fields to each record and hands it to `sink(record)`, always from
one thread (the caller writes requests.jsonl lines there without a lock):
- `t_intended_ns`: the instant the schedule meant to send it (epoch ns); in a closed loop, the
  instant its client became free;
- `t_sent_ns`: the instant `fire` started (epoch ns);
- `send_lag_ms`: t_sent - t_intended in ms;
- `in_flight`: requests in flight when it was handed to its worker, itself included.
Both instants come from the monotonic clock anchored to the wall clock once at the start, so a
clock step during the campaign changes no lag.

Why the intended instant: a generator that waits for a slow VIM (closed loop) or is itself too
slow sends later than it should, and latency measured from the late send misses the waiting
(coordinated omission: Gil Tene, "How NOT to Measure Latency", 2013/2015; Schroeder, Wierman,
Harchol-Balter, "Open Versus Closed: A Cautionary Tale", NSDI 2006). Recording both instants
makes the lag visible instead of hidden.

Stopping: no new request is sent once the run count (`max_runs`), the duration
(`max_duration_s`, on intended instants) or the schedule's end is reached, once a request is due
(LEAD_NS ahead) while `max_in_flight` are in flight (stopped_reason "max-in-flight": the VIM
falls behind), on KeyboardInterrupt in the main thread (vimprof.interrupts.Interrupted
included: "interrupted"), or when `fire` or `sink` raises ("fire-error", "sink-error";
"engine-error": a thread could not start). A request handed over but not yet at its instant
when the campaign is interrupted or fails is not sent. In every case the requests in flight run
to completion (their own clean-up deletes their instances; they are never abandoned), their
records reach the sink, and a `Summary` is returned: the caller decides to re-raise
KeyboardInterrupt after writing its manifest, as engine.run_sequential does.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vimprof import interrupts
from vimprof.campaigns.arrivals import ArrivalProcess, Constant
from vimprof.errors import VimprofError

Fire = Callable[[int, int], dict[str, Any]]  # (index, intended instant epoch ns) -> record
Sink = Callable[[dict[str, Any]], None]

STOP_REASONS = ("max-runs", "max-duration", "schedule-end", "max-in-flight", "interrupted",
                "fire-error", "sink-error", "engine-error")
HEADROOM = 0.5  # share of the calibrated dispatch capacity a campaign may ask for
LEAD_NS = 2_000_000  # an open-loop request goes to its worker this long before its instant
_ABORTS = ("interrupted", "fire-error", "sink-error", "engine-error")  # a waiting worker skips
_NAP_S = 0.05  # longest single sleep of the scheduler (s): how soon it sees a stop
_LAG_WINDOW = 5000  # the progress hook's p99 is over the last this many sends
_WAKE_S = 0.05  # the calling thread looks for a signal at least this often (s): a process-
# directed signal may land on another thread, which does not wake this thread's wait


@dataclass(frozen=True)
class Progress:
    """What the progress hook gets: counts, the send lag's p99 over the last sends (ms, None
    before the first send), seconds since the start."""

    sent: int
    done: int
    in_flight: int
    lag_p99_ms: float | None
    elapsed_s: float


@dataclass
class Summary:
    """The outcome of `run_open_loop`.

    Instants are epoch ns; rates requests/s; lags ms. `offered_rate_rps` is (n - 1) over the
    span of the sent requests' intended instants, `achieved_rate_rps` over the span of their
    actual send instants (None for fewer than 2). `error` says what raised ("fire-error",
    "sink-error"); `exception` is the exception itself (not in `as_manifest()`).
    """

    process: dict[str, Any]
    stopped_reason: str
    sent: int = 0
    done: int = 0
    peak_in_flight: int = 0
    max_in_flight: int = 0
    start_ns: int = 0
    end_ns: int = 0
    last_send_ns: int | None = None
    offered_rate_rps: float | None = None
    achieved_rate_rps: float | None = None
    lag_ms: dict[str, float] | None = None
    interrupt_signal: str | None = None
    error: str | None = None
    records_lost: int = 0
    exception: BaseException | None = field(default=None, repr=False)

    @property
    def interrupted(self) -> bool:
        return self.stopped_reason == "interrupted"

    def as_manifest(self) -> dict[str, Any]:
        """The summary for manifest.json (JSON-serialisable)."""
        out = {k: v for k, v in self.__dict__.items() if k != "exception"}
        out["duration_s"] = (self.end_ns - self.start_ns) / 1e9
        return out


class _State:
    """Counters shared by the threads of one run (under `lock`)."""

    def __init__(self, max_in_flight: int, t0_wall: int, t0_mono: int):
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.reason: str | None = None
        self.error: str | None = None
        self.exception: BaseException | None = None
        self.max_in_flight = max_in_flight
        self.sent = self.done = self.in_flight = self.peak = 0
        self.t0_wall, self.t0_mono = t0_wall, t0_mono
        self.intended: list[int] = []  # monotonic ns of every send, in send order
        self.actual: list[int] = []
        self.lags: list[int] = []  # ns

    def halt(self, reason: str, exc: BaseException | None = None) -> None:
        """Stop sending; the first reason wins."""
        with self.lock:
            if self.reason is None:
                self.reason = reason
                if exc is not None:
                    self.error = f"{reason}: {type(exc).__name__}: {exc}"
                    self.exception = exc
        self.stop.set()

    def wall(self, mono_ns: int) -> int:
        return self.t0_wall + (mono_ns - self.t0_mono)


def run_open_loop(process: ArrivalProcess, fire: Fire, sink: Sink, *, max_in_flight: int,
                  max_runs: int | None = None, max_duration_s: float | None = None,
                  on_progress: Callable[[Progress], None] | None = None,
                  progress_interval_s: float = 0.25,
                  expected_service_s: float | None = None,
                  check: bool = True) -> Summary:
    """Send requests per `process` through `fire`, records to `sink`; returns the Summary.

    `max_in_flight`: the pool's size and the stop condition (see the module's docstring).
    `max_runs` / `max_duration_s` (s, on intended instants): bounds; at least one is needed
    unless the schedule ends by itself (ramps). `on_progress(Progress)` is called from the
    calling thread every `progress_interval_s` s and once at the end. `check` runs
    `check_feasible` first (with `expected_service_s`, the expected duration of one `fire`
    in s, when known): VimprofError before anything is sent for a load that cannot be
    generated. Must be called from the main thread for Ctrl-C / SIGTERM to stop it (signals
    reach only the main thread); elsewhere it runs to its bounds.
    """
    if max_in_flight < 1:
        raise VimprofError("--max-in-flight must be >= 1")
    if max_runs is None and max_duration_s is None and process.duration_s is None:
        raise VimprofError(f"{process.describe()['spec']} needs a bound: a number of runs or "
                           "a duration")
    if max_runs is not None and max_runs < 1:
        raise VimprofError("the number of runs must be >= 1")
    if max_duration_s is not None and max_duration_s <= 0:
        raise VimprofError("the duration must be > 0 s")
    if check:
        check_feasible(process, max_in_flight=max_in_flight,
                       expected_service_s=expected_service_s)

    sink_q: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
    t0_wall, t0_mono = time.time_ns(), time.monotonic_ns()
    st = _State(max_in_flight, t0_wall, t0_mono)
    lost = [0]

    def one(i: int, intended: int, in_flight: int, early: bool = False) -> None:
        """Request i on this thread: fire, stamp, hand to the sink. `early`: handed over
        ahead of its instant (LEAD_NS), it sleeps until then, and is not sent when the
        campaign was interrupted or failed meanwhile."""
        if early:
            _sleep_until(intended)
            if st.reason in _ABORTS:
                with st.lock:
                    st.in_flight -= 1
                    st.sent -= 1
                return
        sent = time.monotonic_ns()
        st.actual.append(sent)  # appends are atomic; read for statistics only at the end
        st.intended.append(intended)
        st.lags.append(sent - intended)
        try:
            rec = dict(fire(i, st.wall(intended)))
        except BaseException as exc:  # noqa: BLE001 - a fire that raises breaks its contract
            st.halt("fire-error", exc)
            rec = {"error": f"{type(exc).__name__}: {exc}"}
        rec.update(t_intended_ns=st.wall(intended), t_sent_ns=st.wall(sent),
                   send_lag_ms=(sent - intended) / 1e6, in_flight=in_flight)
        with st.lock:
            st.in_flight -= 1
            st.done += 1
        sink_q.put(rec)

    def claim() -> int | None:
        """Count a request as sent; returns the count in flight, itself included (None:
        max_in_flight are in flight already)."""
        with st.lock:
            if st.in_flight >= st.max_in_flight:
                return None
            st.in_flight += 1
            st.sent += 1
            st.peak = max(st.peak, st.in_flight)
            return st.in_flight

    def schedule() -> None:
        """Open loop: send each request at its instant (the scheduler thread)."""
        limit = None if max_duration_s is None else round(max_duration_s * 1e9)
        pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="vimprof-fire")
        try:
            offsets: Iterator[int] = process.offsets_ns()
            k = 0
            while True:
                if max_runs is not None and k >= max_runs:
                    st.halt("max-runs")
                    break
                off = next(offsets, None)
                if off is None:
                    st.halt("schedule-end")
                    break
                if limit is not None and off >= limit:
                    st.halt("max-duration")
                    break
                due = t0_mono + off
                _sleep_until(due - LEAD_NS, st.stop)
                if st.stop.is_set():
                    break
                n = claim()
                if n is None:
                    st.halt("max-in-flight")
                    break
                try:
                    pool.submit(one, k, due, n, True)
                except BaseException:
                    with st.lock:  # not sent after all (no thread could start)
                        st.in_flight -= 1
                        st.sent -= 1
                    raise
                k += 1
        except BaseException as exc:  # noqa: BLE001 - a bug here must not hang the campaign
            st.halt("engine-error", exc)
        finally:
            pool.shutdown(wait=True)  # every request in flight runs to its end
            sink_q.put(None)

    next_i = [0]

    def client() -> None:
        """Closed loop: one client, its requests one after another."""
        limit = None if max_duration_s is None else t0_mono + round(max_duration_s * 1e9)
        while not st.stop.is_set():
            free = time.monotonic_ns()
            with st.lock:
                if max_runs is not None and next_i[0] >= max_runs:
                    reason = "max-runs"
                elif limit is not None and free >= limit:
                    reason = "max-duration"
                else:
                    reason = None
                    i = next_i[0]
                    next_i[0] += 1
            if reason:
                st.halt(reason)
                return
            n = claim()
            if n is None:  # cannot happen with clients <= max_in_flight (checked)
                st.halt("max-in-flight")
                return
            one(i, free, n)

    def clients() -> None:
        threads = [threading.Thread(target=client, name=f"vimprof-client-{c}")
                   for c in range(process.concurrency or 1)]
        try:
            for t in threads:
                t.start()
        finally:
            for t in threads:
                if t.ident is not None:
                    t.join()
            sink_q.put(None)

    dispatcher = threading.Thread(target=schedule if process.open else clients,
                                  name="vimprof-scheduler")

    finished = threading.Event()

    def drain_sink() -> None:
        """The one thread that calls `sink`. It starts the dispatcher itself, so the calling
        thread starts one thread only, whatever instant a signal interrupts that start."""
        try:
            try:
                dispatcher.start()
            except BaseException as exc:  # noqa: BLE001 - no thread left: nothing was sent
                st.halt("engine-error", exc)
                sink_q.put(None)
            while (rec := sink_q.get()) is not None:
                try:
                    sink(rec)
                except BaseException as exc:  # noqa: BLE001 - stop sending, keep the rest
                    lost[0] += 1
                    st.halt("sink-error", exc)
        finally:
            finished.set()

    sink_thread = threading.Thread(target=drain_sink, name="vimprof-sink")
    _wait_for(sink_thread, finished, st, on_progress, progress_interval_s)

    return _summary(process, st, lost[0])


def _sleep_until(mono_ns: int, stop: threading.Event | None = None) -> None:
    """Sleep until the monotonic instant `mono_ns` (time.sleep: its wake-up is tighter than a
    timed Event.wait's on Linux), in naps of at most _NAP_S s when `stop` can cut it short."""
    while (wait := mono_ns - time.monotonic_ns()) > 0:
        if stop is None:
            time.sleep(wait / 1e9)
        elif stop.is_set():
            return
        else:
            time.sleep(min(wait / 1e9, _NAP_S))


def _progress(st: _State) -> Progress:
    with st.lock:
        sent, done, in_flight = st.sent, st.done, st.in_flight
    lags = st.lags[-_LAG_WINDOW:]
    p99 = float(np.percentile(lags, 99)) / 1e6 if lags else None
    return Progress(sent, done, in_flight, p99, (time.monotonic_ns() - st.t0_mono) / 1e9)


def _wait_for(last: threading.Thread, finished: threading.Event, st: _State,
              on_progress: Callable[[Progress], None] | None, interval_s: float) -> None:
    """The calling thread's part: start `last` (the sink thread, which starts the rest), wait
    until it sets `finished`, report progress, take interruptions.

    The wait is on an Event, not Thread.join(): in Python 3.11 a KeyboardInterrupt inside
    join() can leave the thread marked as ended while it still runs (CPython gh-90882).

    A KeyboardInterrupt stops the sending; the wait goes on until the requests in flight have
    returned (a second one only prints: their clean-up must not be cut short). One that cuts
    the start itself is safe too: the stop is set first, so a thread that still starts
    sends nothing."""
    cleanup: contextlib.ExitStack | None = None
    started = False
    next_progress = time.monotonic_ns() + round(interval_s * 1e9)
    try:
        while not finished.is_set():
            try:
                if not started:
                    started = True  # never twice, even when interrupted inside
                    last.start()
                    continue
                if finished.wait(min(interval_s, _WAKE_S)):
                    break
                now = time.monotonic_ns()
                if on_progress is not None and now >= next_progress:
                    next_progress = now + round(interval_s * 1e9)
                    on_progress(_progress(st))
            except KeyboardInterrupt:
                if cleanup is None:
                    st.halt("interrupted")
                    cleanup = contextlib.ExitStack()
                    cleanup.enter_context(interrupts.cleaning(
                        "waiting for the requests in flight to end (each deletes its instance)"))
                else:
                    sys.stderr.write(f"vimprof: still waiting for {st.in_flight} request(s) in "
                                     "flight to end (each deletes its instance)\n")
            except Exception:  # noqa: BLE001 - a broken progress hook must not stop the wait
                on_progress = None
        if on_progress is not None:
            with contextlib.suppress(Exception):
                on_progress(_progress(st))
    finally:
        if cleanup is not None:
            cleanup.close()


def _summary(process: ArrivalProcess, st: _State, lost: int) -> Summary:
    end = time.monotonic_ns()
    out = Summary(process=process.describe(), stopped_reason=st.reason or "schedule-end",
                  sent=st.sent, done=st.done, peak_in_flight=st.peak,
                  max_in_flight=st.max_in_flight, start_ns=st.t0_wall, end_ns=st.wall(end),
                  error=st.error, exception=st.exception, records_lost=lost,
                  interrupt_signal=interrupts.received() if st.reason == "interrupted"
                  else None)
    if st.actual:
        out.last_send_ns = st.wall(max(st.actual))
        lags = np.asarray(st.lags, dtype=np.float64) / 1e6
        out.lag_ms = {"p50": float(np.percentile(lags, 50)),
                      "p90": float(np.percentile(lags, 90)),
                      "p99": float(np.percentile(lags, 99)),
                      "max": float(lags.max()), "mean": float(lags.mean())}
    if len(st.actual) >= 2:
        span_i = max(st.intended) - min(st.intended)
        span_a = max(st.actual) - min(st.actual)
        n = len(st.actual) - 1
        out.offered_rate_rps = n / (span_i / 1e9) if span_i > 0 else None
        out.achieved_rate_rps = n / (span_a / 1e9) if span_a > 0 else None
    return out


_capacity: float | None = None


def calibrate(duration_s: float = 0.2, *, refresh: bool = False) -> float:
    """Requests/s this machine's engine carries at saturation with a no-op `fire` and sink
    (scheduler, pool hand-off, stamping, sink thread: the engine's own cost per request):
    an open loop far above that rate for `duration_s` s of schedule, stopped by its
    max-in-flight (256), completed requests over the time until the last was sunk. Measured
    once per process (cached; `refresh` measures again), in about 0.1 to 0.3 s. It bounds the
    generator only: a real `fire` costs CPU too (benchmarks/load_generator.py measures an
    HTTP one, which sustains far less)."""
    global _capacity
    if _capacity is not None and not refresh:
        return _capacity
    summary = run_open_loop(Constant(1e6), lambda i, t: {}, lambda r: None, max_in_flight=256,
                            max_duration_s=duration_s, check=False)
    if summary.interrupted:
        raise KeyboardInterrupt
    span_s = (summary.end_ns - summary.start_ns) / 1e9  # until the last record was sunk
    _capacity = summary.done / span_s if span_s > 0 else 0.0
    return _capacity


def check_feasible(process: ArrivalProcess, *, max_in_flight: int,
                   expected_service_s: float | None = None,
                   capacity_rps: float | None = None) -> None:
    """Refuse, before anything is sent, a load that cannot be generated (VimprofError naming
    the highest that can):
    - closed:C with C > max_in_flight, burst:N@T with N > max_in_flight (it would stop at once);
    - an open-loop rate above HEADROOM x the engine's calibrated dispatch capacity
      (`capacity_rps`, else `calibrate()`);
    - with `expected_service_s` (one fire's expected duration, s): a rate whose in-flight
      count by Little's law (rate x service time) exceeds max_in_flight.
    """
    spec = process.describe()["spec"]
    if not process.open:
        if (process.concurrency or 1) > max_in_flight:
            raise VimprofError(f"{spec} runs {process.concurrency} requests at once, above "
                               f"--max-in-flight {max_in_flight}: raise it or use fewer "
                               "clients")
        return
    if process.burst > max_in_flight:
        raise VimprofError(f"{spec} sends {process.burst} requests at once, above "
                           f"--max-in-flight {max_in_flight}: the campaign would stop at once; "
                           f"use at most burst:{max_in_flight}@... or raise --max-in-flight")
    rate = process.max_rate() or 0.0
    if expected_service_s is not None and expected_service_s > 0:
        highest = max_in_flight / expected_service_s
        if rate > highest:
            raise VimprofError(
                f"{spec} with requests taking about {expected_service_s:.3g} s keeps about "
                f"{rate * expected_service_s:.0f} in flight (Little's law), above "
                f"--max-in-flight {max_in_flight}: the highest rate it allows is "
                f"{highest:.3g} requests/s")
    capacity = capacity_rps if capacity_rps is not None else calibrate()
    highest = HEADROOM * capacity
    if rate > highest:
        raise VimprofError(
            f"{spec} asks for {rate:.6g} requests/s; this machine's engine dispatches about "
            f"{capacity:.0f} requests/s with no work at all, so the highest rate it accepts is "
            f"{highest:.0f} requests/s ({HEADROOM:.0%} of that)")
