"""The chaos drill of issue 20, shared by the Nomad and the Nova lab tests: start a real
`vimprof capture`, kill it with a signal while an instance is in flight, then check that nothing
of it is left (at once for SIGINT, SIGTERM and SIGHUP; after `vimprof clean` for SIGKILL) and
that the interrupted run directory still analyzes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

VIMPROF = [sys.executable, "-m", "vimprof.cli"]
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL]


def vimprof(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIMPROF, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def start_and_kill(args: list[str], cwd: Path, sig: int, in_flight: Callable[[], bool],
                   timeout_s: float = 300) -> subprocess.Popen[str]:
    """Run `vimprof capture ARGS` until its first run is recorded and the next one is in
    flight (`in_flight()`), then send `sig`; returns the ended process."""
    proc = subprocess.Popen([*VIMPROF, "capture", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    label = args[args.index("--label") + 1]
    requests = cwd / "runs" / label / "requests.jsonl"
    deadline = time.monotonic() + timeout_s
    try:
        while not (requests.exists() and requests.read_text().strip()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no run recorded in time"
            time.sleep(0.1)
        while not in_flight():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no instance in flight in time"
            time.sleep(0.05)
        os.kill(proc.pid, sig)
        proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc


def assert_interrupted(proc: subprocess.Popen[str], run: Path, sig: int) -> None:
    """Exit status 128 + signal and a manifest that names the signal."""
    assert proc.returncode == 128 + sig, proc.stderr.read() if proc.stderr else ""
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["interrupted"] is True
    assert manifest["interrupt_signal"] == signal.Signals(sig).name
    assert "end_ns" in manifest


def tcpdumps_writing(run: Path) -> list[int]:
    """PIDs of tcpdump processes still writing into `run` (a killed vimprof's capture)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(c.endswith(b"tcpdump") for c in cmd) and str(run).encode() in b" ".join(cmd):
            found.append(int(pid))
    return found


def wait_until(cond: Callable[[], bool], timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def assert_analyzes(run: Path, cwd: Path) -> None:
    """`vimprof analyze` on the interrupted run: exit 0 and a timelines file."""
    res = vimprof("analyze", str(run), cwd=cwd)
    assert res.returncode == 0, res.stderr
    assert (run / "timelines.jsonl").exists()
