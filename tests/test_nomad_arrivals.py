"""Arrival processes against the real Nomad lab (issue 16, first part): closed and open loops
put several instances in flight at once; every request records its intended and actual send
instant; every timeline is still attributed to its own allocation, checked against Nomad's own
task events; nothing is left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vimprof.campaigns import arrivals
from vimprof.lab import nomad as lab
from vimprof.pushers.nomad import NomadPusher

pytestmark = pytest.mark.lab

VIMPROF = [sys.executable, "-m", "vimprof.cli"]


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.parametrize("arrival", ["closed:3", "poisson:3", "burst:3@2"])
def test_concurrent_arrivals_keep_every_instance_apart(nomad_lab, tmp_path, arrival):
    label = arrival.replace(":", "-").replace("@", "-")
    res = subprocess.run([*VIMPROF, "capture", "--runs", "6", "--label", label, "--arrival",
                          arrival, "--seed", "7", "--max-in-flight", "8"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr + res.stdout
    run = tmp_path / "runs" / label
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["campaign"]["mode"] == ("closed" if arrival.startswith("closed") else "open")
    assert manifest["campaign"]["arrival"] == arrivals.parse(arrival, seed=7).describe()
    assert manifest["load"]["sent"] == 6 and manifest["load"]["stopped_reason"] == "max-runs"
    reqs = lines(run / "requests.jsonl")
    assert sorted(r["run"] for r in reqs) == list(range(6))
    assert all(r["ok"] for r in reqs), [r["error"] for r in reqs]
    for r in reqs:
        assert r["t_intended_ns"] <= r["t_sent_ns"] <= r["t_submit_ns"]
        assert r["send_lag_ms"] >= 0
    # concurrency happened: some instance started before an earlier one was gone
    spans = sorted((r["t_submit_ns"], r["t_gone_ns"]) for r in reqs)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))
    # every timeline belongs to the allocation its own request saw, and agrees with Nomad's
    # own task events of that allocation
    by_alloc = {r["alloc_id"]: r for r in reqs}
    tls = lines(run / "timelines.jsonl")
    assert len(tls) == 6 and {t["instance"] for t in tls} == set(by_alloc)
    for t in tls:
        req = by_alloc[t["instance"]]
        assert t["complete"] and t["job"] == req["job_id"] and t["run"] == req["run"]
        assert req["t_submit_ns"] <= t["phases"]["total"]["start_ns"]
        assert t["phases"]["total"]["end_ns"] <= req["t_running_ns"]
        checks = t["crosscheck"]["checks"]
        assert checks and all(c["ok"] for c in checks), [c for c in checks if not c["ok"]]
    pusher = NomadPusher(nomad_lab.http_addr)
    assert pusher.leftovers() == [] and pusher.wait_no_allocs_running(timeout_s=30)
    assert not lab.guest_pids()


def test_bad_arrival_is_one_line_before_anything_runs(tmp_path):
    res = subprocess.run([*VIMPROF, "capture", "--runs", "2", "--label", "x", "--arrival",
                          "poisson:fast"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "poisson" in res.stderr and not (tmp_path / "runs").exists()


def test_keep_accumulates_then_deletes_all(nomad_lab, tmp_path):
    res = subprocess.run([*VIMPROF, "capture", "--runs", "3", "--label", "keep", "--keep"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr + res.stdout
    run = tmp_path / "runs" / "keep"
    reqs = sorted(lines(run / "requests.jsonl"), key=lambda r: r["run"])
    assert [r["ok"] for r in reqs] == [True, True, True]
    # all three ran at once: every stop came after the last instance ran
    assert max(r["t_running_ns"] for r in reqs) < min(r["t_stop_ns"] for r in reqs)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["campaign"]["keep"] is True
    tls = lines(run / "timelines.jsonl")
    assert len(tls) == 3 and all(t["complete"] and "stop" in t["phases"] for t in tls)
    pusher = NomadPusher(nomad_lab.http_addr)
    assert pusher.leftovers() == [] and pusher.wait_no_allocs_running(timeout_s=30)


def test_lifetime_holds_each_instance(nomad_lab, tmp_path):
    res = subprocess.run([*VIMPROF, "capture", "--runs", "2", "--label", "life", "--lifetime",
                          "1.5", "--no-analyze"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr + res.stdout
    for r in lines(tmp_path / "runs" / "life" / "requests.jsonl"):
        assert r["ok"] and r["t_stop_ns"] - r["t_running_ns"] >= 1.5e9
