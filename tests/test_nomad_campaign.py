"""End to end on the real Nomad lab: capture twice, analyze, compare; Ctrl-C; bad input.

These drive the installed `vimprof` command exactly as a user would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vimprof.lab import nomad as lab
from vimprof.phases import NOMAD
from vimprof.pushers.nomad import NomadPusher
from vimprof.schema import assert_valid

pytestmark = pytest.mark.lab

VIMPROF = [sys.executable, "-m", "vimprof.cli"]


def vimprof(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIMPROF, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_capture_twice_then_compare(nomad_lab, tmp_path):
    for label, extra in (("m128", []), ("m256", ["--memory-mb", "256"])):
        res = vimprof("capture", "--runs", "5", "--label", label, *extra, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        run = tmp_path / "runs" / label
        requests = lines(run / "requests.jsonl")
        assert [r["run"] for r in requests] == list(range(5))
        assert all(r["ok"] and r["client_status"] == "complete" for r in requests), requests
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["vim"]["version"] == "1.6.3"
        assert manifest["campaign"]["memory_mb"] == (256 if extra else 128)
        assert manifest["interrupted"] is False

        timelines = lines(run / "timelines.jsonl")
        assert sorted(t["instance"] for t in timelines) == sorted(r["alloc_id"] for r in requests)
        by_alloc = {r["alloc_id"]: r for r in requests}
        for t in timelines:
            assert t["complete"], t["issues"]
            phases = t["phases"]
            assert set(NOMAD.all) <= set(phases)
            sched, inst, total = (phases[p] for p in ("scheduling", "instantiation", "total"))
            # wire order: register < alloc reaches client <= client pulls < running reported
            assert total["start_ns"] == sched["start_ns"] < sched["end_ns"]
            assert sched["end_ns"] <= inst["start_ns"] < inst["end_ns"] == total["end_ns"]
            assert 0 < sched["ms"] < total["ms"]
            # the capture saw the register after the client sent it and the "running" update
            # before the client saw the allocation running (one machine, one clock)
            req = by_alloc[t["instance"]]
            assert req["t_submit_ns"] <= total["start_ns"] <= req["t_registered_ns"]
            assert total["end_ns"] <= req["t_running_ns"]
            assert t["run"] == req["run"] and t["job"] == req["job_id"]
        assert_valid(run)  # every file against vimprof/schemas (docs/run-directory.md)

    res = vimprof("compare", "m128", "m256", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    for phase in NOMAD.all:
        assert phase in res.stdout
    report = tmp_path / "reports" / "m128-vs-m256"
    md = (report / "report.md").read_text()
    assert "m128" in md and "m256" in md and "scheduling" in md
    assert (report / "phases.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not lab.guest_pids(), "a guest outlived its campaign"


def test_ctrl_c_stops_campaign_and_leaks_nothing(nomad_lab, tmp_path):
    proc = subprocess.Popen([*VIMPROF, "capture", "--runs", "50", "--label", "cc"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    requests = tmp_path / "runs" / "cc" / "requests.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (requests.exists() and requests.read_text()):
        time.sleep(0.1)
    time.sleep(0.3)  # most likely in the middle of the next run
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert 1 <= len(lines(requests)) < 50
    manifest = json.loads((tmp_path / "runs" / "cc" / "manifest.json").read_text())
    assert manifest["interrupted"] is True
    pusher = NomadPusher(nomad_lab.http_addr)
    assert pusher.leftovers() == []
    assert pusher.wait_no_allocs_running(timeout_s=30)
    deadline = time.monotonic() + 30
    while lab.guest_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lab.guest_pids() == []


def test_unreachable_nomad_is_one_line_error(tmp_path):
    res = vimprof("capture", "--runs", "1", "--label", "x", "--nomad-addr",
                  "http://127.0.0.1:1", "--kernel", "/nonexistent/k.elf", cwd=tmp_path,
                  timeout=60)
    assert res.returncode == 2
    assert "Nomad is unreachable at http://127.0.0.1:1" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "runs" / "x" / "requests.jsonl").exists()


def test_compare_without_timelines_is_one_line_error(tmp_path):
    for label in ("a", "b"):
        (tmp_path / "runs" / label).mkdir(parents=True)
    res = vimprof("compare", "a", "b", cwd=tmp_path)
    assert res.returncode == 2
    assert "has no timelines.jsonl" in res.stderr and "vimprof analyze" in res.stderr
    assert "Traceback" not in res.stderr


def test_analyze_not_a_pcap_is_one_line_error(tmp_path):
    run = tmp_path / "runs" / "junk"
    run.mkdir(parents=True)
    (run / "capture.pcap").write_text("this is not a capture\n")
    res = vimprof("analyze", "junk", cwd=tmp_path)
    assert res.returncode == 2
    assert "not a pcap" in res.stderr and "Traceback" not in res.stderr
