"""vimprof.campaigns.openloop against a real HTTP server on 127.0.0.1 standing in for a VIM.

The server (http.server.ThreadingHTTPServer) sleeps `ms` milliseconds per request to emulate
the VIM's service time and counts the requests it has in progress, so the tests see the
concurrency from the server's side. `fire` does one HTTP request with `requests` (a session
per thread). Every test is bounded in count and time (a few seconds at most).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
import requests

from vimprof import interrupts
from vimprof.campaigns import openloop
from vimprof.campaigns.arrivals import Constant, parse
from vimprof.campaigns.openloop import Progress, check_feasible, run_open_loop
from vimprof.errors import VimprofError


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.active = self.peak = self.started = self.finished = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per client thread
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        q = parse_qs(urlparse(self.path).query)
        srv = self.server
        with srv.lock:
            srv.active += 1
            srv.started += 1
            srv.peak = max(srv.peak, srv.active)
        time.sleep(float(q.get("ms", ["0"])[0]) / 1000)
        with srv.lock:
            srv.active -= 1
            srv.finished += 1
        body = json.dumps({"i": int(q.get("i", ["-1"])[0])}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def vim():
    srv = _Server()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _fast_calibration(monkeypatch):
    """A fixed engine capacity instead of a calibration per test (tested on its own)."""
    monkeypatch.setattr(openloop, "_capacity", 20_000.0)


def http_fire(srv: _Server, service_ms: float):
    """fire(i, intended_ns): one GET taking `service_ms` at the server; its record."""
    local = threading.local()
    url = f"http://127.0.0.1:{srv.server_address[1]}/"

    def fire(i: int, intended_ns: int) -> dict:
        if not hasattr(local, "s"):
            local.s = requests.Session()
        t = time.time_ns()
        r = local.s.get(url, params={"i": i, "ms": service_ms}, timeout=10)
        return {"i": r.json()["i"], "status": r.status_code, "t_done_ns": time.time_ns(),
                "service_ms": (time.time_ns() - t) / 1e6, "intended_arg": intended_ns}

    return fire


class Collector:
    """A sink that checks it is called from one thread only."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.threads: set[int] = set()

    def __call__(self, rec: dict) -> None:
        self.threads.add(threading.get_ident())
        self.records.append(rec)


def test_open_loop_keeps_the_schedule_while_the_vim_is_slow(vim):
    """The coordinated-omission property: 40 req/s for 1 s against a 300 ms service time.
    The open loop sends every request on time (in flight grows to ~12); a closed loop with one
    client over the same second sends only 3 or 4 and each waits for the previous."""
    sink = Collector()
    s = run_open_loop(Constant(40), http_fire(vim, 300), sink, max_in_flight=50, max_runs=40)
    assert s.stopped_reason == "max-runs" and s.sent == s.done == 40 == len(sink.records)
    assert len(sink.threads) == 1
    recs = sorted(sink.records, key=lambda r: r["i"])
    assert [r["i"] for r in recs] == list(range(40))
    assert all(r["status"] == 200 for r in recs)
    intended = np.array([r["t_intended_ns"] for r in recs])
    sent = np.array([r["t_sent_ns"] for r in recs])
    assert set(np.diff(intended)) == {25_000_000}  # the schedule itself: exactly 1/40 s
    assert all(r["intended_arg"] == r["t_intended_ns"] for r in recs)
    lags = (sent - intended) / 1e6
    assert np.allclose(lags, [r["send_lag_ms"] for r in recs])
    assert lags.min() >= 0 and np.percentile(lags, 99) < 25  # on time (a loaded box's noise)
    assert s.lag_ms["p99"] == pytest.approx(np.percentile(lags, 99))
    # the VIM fell behind, the generator did not: ~300 / 25 = 12 in flight
    assert 10 <= s.peak_in_flight <= 16 and vim.peak >= 10
    assert max(r["in_flight"] for r in recs) == s.peak_in_flight
    assert s.offered_rate_rps == pytest.approx(40)
    assert s.achieved_rate_rps == pytest.approx(40, rel=0.05)
    assert all(r["service_ms"] >= 300 for r in recs)

    closed = Collector()
    c = run_open_loop(parse("sequential"), http_fire(vim, 300), closed, max_in_flight=50,
                      max_duration_s=1.0)
    assert c.stopped_reason == "max-duration" and c.peak_in_flight == 1
    assert 3 <= c.sent <= 4  # 0, 0.3, 0.6, 0.9 s (or 3 when the box is loaded) versus 40
    crecs = sorted(closed.records, key=lambda r: r["i"])
    # in the closed loop each next request is intended when the previous has returned
    for prev, nxt in zip(crecs, crecs[1:], strict=False):
        assert nxt["t_intended_ns"] >= prev["t_done_ns"]


@pytest.mark.parametrize("clients", [1, 3])
def test_closed_loop_never_exceeds_its_clients(vim, clients):
    sink = Collector()
    spec = "sequential" if clients == 1 else f"closed:{clients}"
    s = run_open_loop(parse(spec), http_fire(vim, 40), sink, max_in_flight=10, max_runs=12)
    assert s.stopped_reason == "max-runs" and s.sent == s.done == 12
    assert sorted(r["i"] for r in sink.records) == list(range(12))
    assert s.peak_in_flight == clients and vim.peak == clients
    assert max(r["in_flight"] for r in sink.records) == clients
    assert s.process["clients"] == clients
    assert (s.end_ns - s.start_ns) / 1e9 >= 12 / clients * 0.040


def test_max_in_flight_stops_cleanly_and_keeps_the_records(vim):
    """100 req/s against 500 ms: the 6th request is due while 5 are in flight: no send, the 5
    finish, their records are kept."""
    sink = Collector()
    t = time.monotonic()
    s = run_open_loop(Constant(100), http_fire(vim, 500), sink, max_in_flight=5, max_runs=100)
    assert s.stopped_reason == "max-in-flight"
    assert s.sent == s.done == 5 == len(sink.records) == vim.finished == vim.started
    assert s.peak_in_flight == 5 and vim.active == 0
    assert 0.5 <= time.monotonic() - t < 2.0  # it waited for the five, not for 100
    assert s.as_manifest()["stopped_reason"] == "max-in-flight"
    json.dumps(s.as_manifest())


@pytest.fixture
def handlers():
    """vimprof's signal handlers for the test (as the CLI has them), pytest's restored after."""
    old = {sg: signal.getsignal(sg) for sg in interrupts.SIGNALS}
    interrupts.reset()
    interrupts.install()
    yield
    for sg, h in old.items():
        signal.signal(sg, h)
    interrupts.reset()


def _signal_later(delays_s, sig):
    """Send `sig` to this process after each delay (s, from now), from a timer thread."""
    def send():
        t0 = time.monotonic()
        for d in delays_s:
            time.sleep(max(0.0, t0 + d - time.monotonic()))
            os.kill(os.getpid(), sig)

    th = threading.Thread(target=send, daemon=True)
    th.start()
    return th


def test_sigterm_waits_for_in_flight_requests_and_returns_what_was_measured(vim, handlers,
                                                                            capsys):
    """SIGTERM at 0.5 s into 20 req/s against 400 ms; a second one at 0.7 s only prints."""
    sink = Collector()
    t0 = time.time_ns()
    _signal_later([0.5, 0.7], signal.SIGTERM)
    s = run_open_loop(Constant(20), http_fire(vim, 400), sink, max_in_flight=50, max_runs=100)
    assert s.stopped_reason == "interrupted" and s.interrupted
    assert s.interrupt_signal == "SIGTERM"
    assert 8 <= s.sent <= 13  # ~0.5 s of 20 req/s
    # nothing abandoned: every request sent finished at the server and was recorded
    assert s.done == s.sent == len(sink.records) == vim.finished == vim.started
    assert vim.active == 0 and all(r["status"] == 200 for r in sink.records)
    assert max(r["t_sent_ns"] for r in sink.records) < t0 + 0.75e9  # no send after the signal
    assert (s.end_ns - t0) / 1e9 >= 0.5 + 0.35  # waited for the last ones' 400 ms
    err = capsys.readouterr().err
    assert "SIGTERM again" in err and "waiting for the requests in flight" in err


def test_keyboard_interrupt_in_a_closed_loop(vim):
    """A plain Ctrl-C (Python's own handler): the loop stops, the two in flight finish."""
    sink = Collector()
    timer = threading.Timer(0.3, lambda: signal.pthread_kill(threading.main_thread().ident,
                                                             signal.SIGINT))
    timer.start()
    s = run_open_loop(parse("closed:2"), http_fire(vim, 200), sink, max_in_flight=4,
                      max_runs=50)
    timer.join()
    assert s.stopped_reason == "interrupted"
    assert s.sent == s.done == len(sink.records) == vim.finished
    assert 2 <= s.sent <= 6 and vim.active == 0


def test_bounded_by_duration_and_progress_hook(vim):
    sink = Collector()
    seen: list[Progress] = []
    s = run_open_loop(Constant(50), http_fire(vim, 20), sink, max_in_flight=20,
                      max_duration_s=0.6, on_progress=seen.append, progress_interval_s=0.1)
    assert s.stopped_reason == "max-duration" and s.sent == 30
    assert all(r["t_intended_ns"] - s.start_ns < 0.6e9 for r in sink.records)
    assert len(seen) >= 4
    assert [p.sent for p in seen] == sorted(p.sent for p in seen)
    last = seen[-1]
    assert last.sent == last.done == 30 and last.in_flight == 0
    assert last.lag_p99_ms is not None and last.lag_p99_ms >= 0


def test_burst_sends_each_group_at_once(vim):
    sink = Collector()
    s = run_open_loop(parse("burst:5@0.3s"), http_fire(vim, 100), sink, max_in_flight=5,
                      max_runs=15)
    assert s.stopped_reason == "max-runs" and s.done == 15
    groups: dict[int, int] = {}
    for r in sink.records:
        groups[r["t_intended_ns"]] = groups.get(r["t_intended_ns"], 0) + 1
    assert sorted(groups.values()) == [5, 5, 5] and s.peak_in_flight == 5 and vim.peak == 5


def test_ramp_and_poisson_record_their_process(vim):
    sink = Collector()
    s = run_open_loop(parse("rate:10..40/1s"), http_fire(vim, 5), sink, max_in_flight=20)
    assert s.stopped_reason == "schedule-end" and s.sent == 25  # (10 + 40) / 2 * 1
    assert s.process["spec"] == "rate:10..40/1s"
    p = run_open_loop(parse("poisson:30", seed=5), http_fire(vim, 5), Collector(),
                      max_in_flight=20, max_runs=10)
    assert p.process["seed"] == 5 and p.sent == 10


def test_a_fire_that_raises_stops_the_campaign_and_is_recorded(vim):
    ok = http_fire(vim, 200)

    def fire(i, intended_ns):
        if i == 3:
            raise RuntimeError("pusher bug")
        return ok(i, intended_ns)

    sink = Collector()
    s = run_open_loop(Constant(50), fire, sink, max_in_flight=10, max_runs=50)
    assert s.stopped_reason == "fire-error" and "pusher bug" in s.error
    assert isinstance(s.exception, RuntimeError)
    assert s.done == s.sent == len(sink.records) and s.sent < 10
    assert [r for r in sink.records if "error" in r][0]["send_lag_ms"] >= 0
    assert vim.active == 0 and vim.finished == s.sent - 1


def test_a_sink_that_raises_stops_the_campaign():
    def sink(rec):
        raise OSError("disk full")

    s = run_open_loop(Constant(100), lambda i, t: {"i": i}, sink, max_in_flight=10,
                      max_runs=100)
    assert s.stopped_reason == "sink-error" and "disk full" in s.error
    assert s.records_lost == s.done and s.sent < 100


def test_needs_a_bound():
    with pytest.raises(VimprofError, match="needs a bound"):
        run_open_loop(Constant(10), lambda i, t: {}, lambda r: None, max_in_flight=5)


def test_feasibility_refuses_what_cannot_be_generated_before_sending():
    calls = []

    def fire(i, t):
        calls.append(i)
        return {}

    with pytest.raises(VimprofError, match=r"highest rate it accepts is 10000 requests/s"):
        run_open_loop(Constant(50_000), fire, lambda r: None, max_in_flight=100, max_runs=10)
    with pytest.raises(VimprofError, match=r"above --max-in-flight 4.*burst:4@"):
        run_open_loop(parse("burst:5@1s"), fire, lambda r: None, max_in_flight=4, max_runs=10)
    with pytest.raises(VimprofError, match="closed:8 runs 8 requests at once"):
        run_open_loop(parse("closed:8"), fire, lambda r: None, max_in_flight=4, max_runs=10)
    with pytest.raises(VimprofError, match=r"about 40 in flight.*highest rate it allows is 10 "):
        run_open_loop(Constant(20), fire, lambda r: None, max_in_flight=20, max_runs=10,
                      expected_service_s=2.0)
    assert calls == []
    check_feasible(Constant(10), max_in_flight=20, expected_service_s=2.0)  # 20 in flight: ok
    check_feasible(parse("closed:4"), max_in_flight=4)


def test_calibration_measures_the_engine(monkeypatch):
    monkeypatch.setattr(openloop, "_capacity", None)
    t = time.monotonic()
    cap = openloop.calibrate()
    assert time.monotonic() - t < 2.0
    assert cap > 1000  # requests/s with no work: far above any VIM campaign's rate
    assert openloop.calibrate() == cap  # cached
