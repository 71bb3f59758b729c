"""Arrival processes against the real Nova lab: servers booted concurrently (closed loop) and on
a Poisson schedule keep their own timelines (request ids and oslo.messaging message ids), agree
with Nova's instance actions, and none is left."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vimprof.lab import nova as lab

pytestmark = pytest.mark.lab

VIMPROF = [sys.executable, "-m", "vimprof.cli"]


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.parametrize("arrival", ["closed:2", "poisson:1"])
def test_concurrent_boots_keep_every_server_apart(nova_lab, conn, tmp_path, arrival):
    label = arrival.replace(":", "-")
    res = subprocess.run([*VIMPROF, "capture", "--vim", "nova", "--nova-driver", "tuned",
                          "--runs", "4", "--label", label, "--arrival", arrival, "--seed", "3",
                          "--max-in-flight", "6"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stderr + res.stdout
    run = tmp_path / "runs" / label
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["load"]["sent"] == 4 and manifest["load"]["stopped_reason"] == "max-runs"
    reqs = lines(run / "requests.jsonl")
    assert sorted(r["run"] for r in reqs) == [0, 1, 2, 3] and all(r["ok"] for r in reqs)
    for r in reqs:
        assert r["t_intended_ns"] <= r["t_sent_ns"] <= r["t_submit_ns"]
    if arrival.startswith("closed"):  # two boots overlapped
        spans = sorted((r["t_submit_ns"], r["t_gone_ns"]) for r in reqs)
        assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))
    by_server = {r["server_id"]: r for r in reqs}
    tls = lines(run / "timelines.jsonl")
    assert {t["instance"] for t in tls} == set(by_server)
    for t in tls:
        req = by_server[t["instance"]]
        assert t["complete"], t["issues"]
        assert t["run"] == req["run"]
        assert req["t_submit_ns"] <= t["phases"]["total"]["start_ns"]
        bad = [c for c in t.get("crosscheck", {}).get("checks", []) if not c["ok"]]
        assert not bad, bad
    left = conn.compute.get("/servers?name=^vimprof-", microversion="2.52").json()["servers"]
    assert left == [] and not lab.guest_pids()


def test_keep_holds_every_server_until_the_end(nova_lab, conn, tmp_path):
    res = subprocess.run([*VIMPROF, "capture", "--vim", "nova", "--nova-driver", "tuned",
                          "--runs", "2", "--label", "keep", "--keep", "--no-analyze"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr + res.stdout
    reqs = lines(tmp_path / "runs" / "keep" / "requests.jsonl")
    assert len(reqs) == 2 and all(r["ok"] for r in reqs)
    assert max(r["t_active_ns"] for r in reqs) < min(r["t_delete_ns"] for r in reqs)
    left = conn.compute.get("/servers?name=^vimprof-", microversion="2.52").json()["servers"]
    assert left == [] and not lab.guest_pids()
