"""Chaos on the Nomad lab (issue 20): SIGINT, SIGTERM, SIGHUP and SIGKILL in the middle of a
campaign leave no job, allocation or guest (SIGKILL: after `vimprof clean`), and the run
directory still analyzes."""

from __future__ import annotations

import json
import signal

import pytest
from chaos import (
    SIGNALS,
    assert_analyzes,
    assert_interrupted,
    start_and_kill,
    tcpdumps_writing,
    vimprof,
    wait_until,
)

from vimprof.lab import nomad as lab
from vimprof.pushers.nomad import NomadPusher

pytestmark = pytest.mark.lab


def _in_flight(pusher: NomadPusher, label: str):
    def check() -> bool:  # a job of this campaign registered and not yet stopped
        return any(j["Status"] != "dead" for j in
                   pusher.api.jobs.get_jobs(prefix=f"vimprof-{label}-"))
    return check


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_mid_campaign_leaves_no_job(nomad_lab, tmp_path, sig):
    label = f"chaos-{signal.Signals(sig).name.lower()}"
    run = tmp_path / "runs" / label
    pusher = NomadPusher(nomad_lab.http_addr)
    proc = start_and_kill(["--runs", "40", "--label", label], tmp_path, sig,
                          _in_flight(pusher, label))
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        assert wait_until(lambda: not tcpdumps_writing(run), 10), "capture outlived vimprof"
        left = pusher.leftovers()
        assert len(left) == 1 and left[0].startswith(f"vimprof-{label}-")
        dry = vimprof("clean", "--vim", "nomad", "--dry-run", cwd=tmp_path)
        assert dry.returncode == 0, dry.stderr
        assert left[0] in dry.stdout and "would delete" in dry.stdout
        assert pusher.leftovers() == left  # a dry run deletes nothing
        res = vimprof("clean", "--vim", "nomad", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert "deleted 1" in res.stdout
    else:
        assert_interrupted(proc, run, sig)
    assert pusher.leftovers() == []
    assert pusher.wait_no_allocs_running(timeout_s=30)
    assert wait_until(lambda: not lab.guest_pids()), f"guests left: {lab.guest_pids()}"
    assert_analyzes(run, tmp_path)


def test_next_campaign_purges_what_a_killed_one_left(nomad_lab, tmp_path):
    """SIGKILL leaves a job (found by its meta tag, which a plain job list leaves out); the next
    campaign purges it first and says so in the terminal and the manifest."""
    pusher = NomadPusher(nomad_lab.http_addr)
    start_and_kill(["--runs", "40", "--label", "chaos-next"], tmp_path, signal.SIGKILL,
                   _in_flight(pusher, "chaos-next"))
    left = pusher.leftovers()
    assert len(left) == 1
    res = vimprof("capture", "--runs", "1", "--label", "after", "--no-analyze", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "deleted 1 job(s) left by an earlier campaign" in res.stdout
    manifest = json.loads((tmp_path / "runs" / "after" / "manifest.json").read_text())
    assert manifest["leftovers_purged"] == 1
    assert pusher.leftovers() == []
    assert wait_until(lambda: not lab.guest_pids())


def test_clean_touches_only_jobs_with_vimprof_tag(nomad_lab, tmp_path):
    """A job named like vimprof's but without its meta tag (a user's own) survives clean."""
    pusher = NomadPusher(nomad_lab.http_addr)
    job = {"ID": "vimprof-users-own", "Name": "vimprof-users-own", "Type": "batch",
           "Datacenters": ["*"], "TaskGroups": [{"Name": "g", "Count": 0, "Tasks": [
               {"Name": "t", "Driver": "qemu", "Config": {"image_path": "/nonexistent"}}]}]}
    pusher.api.job.register_job(job["ID"], {"Job": job})
    try:
        res = vimprof("clean", "--vim", "nomad", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert "vimprof-users-own" not in res.stdout
        assert pusher.api.job.get_job("vimprof-users-own")["ID"] == "vimprof-users-own"
    finally:
        pusher.purge("vimprof-users-own")


def test_second_signal_during_cleanup_says_what_and_finishes_it(nomad_lab, tmp_path):
    """SIGTERM then, during the clean-up, SIGINT: the second only says what is being cleaned;
    the job is still purged, the manifest whole, the exit status the first signal's."""
    import os
    import subprocess
    import sys
    import time

    pusher = NomadPusher(nomad_lab.http_addr)
    proc = subprocess.Popen([sys.executable, "-m", "vimprof.cli", "capture", "--runs", "40",
                             "--label", "twice"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    check = _in_flight(pusher, "twice")
    deadline = time.monotonic() + 120
    while not ((tmp_path / "runs" / "twice" / "requests.jsonl").exists() and check()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    time.sleep(0.1)  # the pusher is stopping the job: Nomad's stop takes ~200 ms
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGINT again: still cleaning up" in err, err
    manifest = json.loads((tmp_path / "runs" / "twice" / "manifest.json").read_text())
    assert manifest["interrupt_signal"] == "SIGTERM" and "end_ns" in manifest
    assert not list((tmp_path / "runs" / "twice").glob("*.tmp"))
    assert pusher.leftovers() == []
    assert wait_until(lambda: not lab.guest_pids())
