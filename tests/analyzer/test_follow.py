"""Live mode (`vimprof analyze RUN --follow`, analyzer/follow.py): a capture read while it is
written gives exactly the offline result; on the real Nomad lab beside `vimprof capture`."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vimprof.analyzer import analyze_run
from vimprof.analyzer.follow import Follower, analyze_run_follow, describe
from vimprof.analyzer.sources.growing import FollowFile
from vimprof.rundir import CAPTURE, MANIFEST, REQUESTS, TIMELINES, VIM_EVENTS, RunDir

DATA = Path(__file__).parent.parent / "data"
LAB = DATA / "nomad-lab-3runs"


def _offline(tmp_path: Path, src: Path) -> list[str]:
    """timelines.jsonl lines of an offline analysis of a copy of `src`."""
    run = RunDir(tmp_path / "offline")
    shutil.copytree(src, run.path)
    analyze_run(run)
    return run.file(TIMELINES).read_text().splitlines()


class _Campaign(threading.Thread):
    """Writes `src`'s capture into `run` progressively, as tcpdump would: random-size
    chunks with delays; the side files appear at the end, then manifest end_ns."""

    def __init__(self, src: Path, run: RunDir, seed: int, delay_s: float = 0.01):
        super().__init__(daemon=True)
        self.src, self.rd, self.delay_s = src, run, delay_s
        self.rng = random.Random(seed)
        self.finished_at: float | None = None
        self.stop_after: int | None = None  # bytes: stop writing there, campaign goes on

    def run(self) -> None:
        data = (self.src / CAPTURE).read_bytes()
        self.rd.file(MANIFEST).write_text(json.dumps({"start_ns": 1, "pid": os.getpid()}))
        pos = 0
        with open(self.rd.file(CAPTURE), "wb") as fh:
            while pos < len(data):
                if self.stop_after is not None and pos >= self.stop_after:
                    return
                n = self.rng.choice((1, 3, 17, 100, 1000, 5000, 20000))
                fh.write(data[pos:pos + n])
                fh.flush()
                pos += n
                time.sleep(self.rng.random() * self.delay_s)
        for name in (REQUESTS, VIM_EVENTS, "hooks.jsonl"):
            if (self.src / name).exists():
                shutil.copy(self.src / name, self.rd.file(name))
        self.finished_at = time.monotonic()
        self.rd.file(MANIFEST).write_text(json.dumps({"start_ns": 1, "end_ns": 2}))


def _follow(run: RunDir, seen: list[tuple[float, dict]], **kw) -> tuple[Follower, object]:
    f = Follower(run, lambda tl: seen.append((time.monotonic(), tl)), poll_s=0.01, **kw)
    return f, analyze_run_follow(run, f)


def test_follow_file_blocks_until_bytes_exist(tmp_path):
    p = tmp_path / "grow"
    done = threading.Event()
    ff = FollowFile(p, done.is_set, poll_s=0.01)

    def writer():
        time.sleep(0.1)
        with open(p, "wb") as fh:  # the file appears late, then grows
            for part in (b"ab", b"cde", b"fgh"):
                fh.write(part)
                fh.flush()
                time.sleep(0.05)
        done.set()

    t0 = time.monotonic()
    threading.Thread(target=writer).start()
    assert ff.read(4) == b"abcd"
    assert time.monotonic() - t0 >= 0.1
    assert ff.read(10) == b"efgh"  # the writer finished: what is left
    assert ff.read(1) == b""
    assert ff.bytes_read == 8


@pytest.mark.parametrize("seed", [1, 2])
def test_follow_gives_the_offline_result(tmp_path, seed):
    want = _offline(tmp_path, LAB)
    run = RunDir(tmp_path / "live")
    run.path.mkdir()
    writer = _Campaign(LAB, run, seed)
    writer.start()
    seen: list[tuple[float, dict]] = []
    follower, res = _follow(run, seen)
    writer.join()
    assert run.file(TIMELINES).read_text().splitlines() == want
    assert len(seen) == 3 and res.counts["timelines"] == 3 and not res.truncated
    # the first allocation was reported while the capture was still being written
    assert seen[0][0] < writer.finished_at
    assert "scheduling" in describe(seen[0][1]) and "total" in describe(seen[0][1])
    assert not any(w.startswith("interrupted") for w in res.warnings)
    assert not list(tmp_path.glob("live/*.spool")) and not list(tmp_path.glob("live/*.tmp"))


def test_follow_nova_capture(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(DATA / "nova-lab-delete" / CAPTURE, src / CAPTURE)
    want = _offline(tmp_path, src)
    assert want
    run = RunDir(tmp_path / "live")
    run.path.mkdir()
    writer = _Campaign(src, run, 3, delay_s=0.002)
    writer.start()
    seen: list = []
    _follow(run, seen)
    writer.join()
    assert run.file(TIMELINES).read_text().splitlines() == want


def test_follow_stop_writes_what_was_read(tmp_path):
    """Ctrl-C of the follower (Follower.stop) mid-capture: a partial, clean result."""
    run = RunDir(tmp_path / "live")
    run.path.mkdir()
    writer = _Campaign(LAB, run, 4)
    writer.stop_after = (LAB / CAPTURE).stat().st_size // 2  # the campaign never ends
    writer.start()
    seen: list = []
    f = Follower(run, lambda tl: seen.append(tl), poll_s=0.01)
    threading.Timer(1.0, f.stop).start()
    res = analyze_run_follow(run, f)
    assert res.warnings[0].startswith("interrupted")
    lines = run.file(TIMELINES).read_text().splitlines()
    assert 1 <= len(lines) <= 3
    assert all(json.loads(x)["vim"] == "nomad" for x in lines)
    assert not list(run.path.glob("*.spool"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_cli_follow_signal_writes_what_was_read(tmp_path, sig):
    """SIGINT, SIGTERM or SIGHUP to `vimprof analyze --follow` while the campaign is still
    going: the timelines of what was read written, exit status 128 + the signal."""
    run = RunDir(tmp_path / "live")
    run.path.mkdir()
    shutil.copy(LAB / CAPTURE, run.file(CAPTURE))
    run.file(MANIFEST).write_text(json.dumps({"start_ns": 1, "pid": os.getpid()}))
    p = subprocess.Popen([sys.executable, "-m", "vimprof.cli", "analyze", str(run.path),
                          "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    first = p.stdout.readline()
    assert first.startswith("following")
    timer = threading.Timer(60, p.kill)  # never hang the suite
    timer.start()
    # the first allocation is finished (terminal, purged, 2 s of capture later); the
    # others wait for more capture that does not come
    assert p.stdout.readline().startswith("nomad ")
    timer.cancel()
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 128 + sig, err
    assert "interrupted" in err and "analyzed" in out
    assert len(run.file(TIMELINES).read_text().splitlines()) == 3


def test_follow_ends_when_the_campaign_process_is_gone(tmp_path):
    run = RunDir(tmp_path / "live")
    run.path.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    shutil.copy(LAB / CAPTURE, run.file(CAPTURE))
    run.file(MANIFEST).write_text(json.dumps({"start_ns": 1, "pid": dead.pid}))
    t0 = time.monotonic()
    res = analyze_run_follow(run, Follower(run, poll_s=0.01))
    assert time.monotonic() - t0 < 10
    assert res.counts["timelines"] == 3


def test_cli_follow_lab(nomad_lab, tmp_path):
    """`vimprof analyze RUN --follow` beside a real `vimprof capture --runs 3`: instances
    are reported before the campaign ends; the final timelines equal an offline analysis."""
    runs = tmp_path / "runs"
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    vimprof = [sys.executable, "-m", "vimprof.cli"]
    follow = subprocess.Popen(
        [*vimprof, "analyze", "live", "--follow", "--runs-dir", str(runs)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(
        target=lambda: [lines.append((time.monotonic(), x)) for x in follow.stdout], daemon=True
    )
    reader.start()
    cap = subprocess.run(
        [*vimprof, "capture", "--runs", "4", "--label", "live", "--runs-dir", str(runs),
         "--no-analyze", "--accel", "tcg"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    cap_done = time.monotonic()
    assert cap.returncode == 0, cap.stderr + cap.stdout
    try:
        follow.wait(timeout=120)
    finally:
        if follow.poll() is None:
            follow.kill()
    reader.join(timeout=10)
    err = follow.stderr.read()
    assert follow.returncode == 0, err
    run = RunDir(runs / "live")
    live = run.file(TIMELINES).read_text().splitlines()
    reported = [(t, x) for t, x in lines if x.startswith("nomad ")]
    assert len(reported) == 4, lines
    assert reported[0][0] < cap_done, "no instance reported before the capture ended"
    assert any("analyzed" in x for _t, x in lines)
    shutil.copytree(run.path, tmp_path / "copy")
    copy = RunDir(tmp_path / "copy")
    copy.file(TIMELINES).unlink()
    analyze_run(copy)
    assert copy.file(TIMELINES).read_text().splitlines() == live
    assert len(live) == 4 and all(json.loads(x)["complete"] for x in live)
