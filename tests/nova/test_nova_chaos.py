"""Chaos on the Nova lab (issue 20): SIGINT, SIGTERM, SIGHUP and SIGKILL in the middle of a
campaign leave no server and no guest (SIGKILL: after `vimprof clean`), and the run directory
still analyzes."""

from __future__ import annotations

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

from vimprof.lab import nova as lab
from vimprof.pushers.nova import NovaPusher

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_mid_campaign_leaves_no_server(nova_lab, conn, tmp_path, sig):
    label = f"chaos-{signal.Signals(sig).name.lower()}"
    run = tmp_path / "runs" / label
    pusher = NovaPusher(conn)

    def in_flight() -> bool:  # a server of this campaign exists (booting or being deleted)
        return bool(conn.compute.get(f"/servers?name=^vimprof-{label}-",
                                     microversion="2.52").json()["servers"])

    proc = start_and_kill(["--vim", "nova", "--runs", "40", "--label", label], tmp_path, sig,
                          in_flight)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        assert wait_until(lambda: not tcpdumps_writing(run), 10), "capture outlived vimprof"
        left = pusher.leftovers()
        assert left, "SIGKILL mid-boot should leave the in-flight server for `vimprof clean`"
        dry = vimprof("clean", "--vim", "nova", "--dry-run", cwd=tmp_path)
        assert dry.returncode == 0, dry.stderr
        assert all(sid in dry.stdout for sid in left) and "would delete" in dry.stdout
        assert pusher.leftovers() == left  # a dry run deletes nothing
        res = vimprof("clean", "--vim", "nova", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert f"deleted {len(left)}" in res.stdout
    else:
        assert_interrupted(proc, run, sig)
    assert pusher.leftovers() == []
    assert wait_until(lambda: not lab.guest_pids()), f"guests left: {lab.guest_pids()}"
    assert_analyzes(run, tmp_path)


def test_next_campaign_purges_what_a_killed_one_left(nova_lab, conn, tmp_path):
    """SIGKILL leaves a server; the next campaign on the lab deletes it first and says so in
    the terminal and the manifest."""
    import json

    pusher = NovaPusher(conn)
    label = "chaos-next"

    def in_flight() -> bool:
        return bool(conn.compute.get(f"/servers?name=^vimprof-{label}-",
                                     microversion="2.52").json()["servers"])

    start_and_kill(["--vim", "nova", "--runs", "40", "--label", label], tmp_path,
                   signal.SIGKILL, in_flight)
    left = pusher.leftovers()
    assert left
    res = vimprof("capture", "--vim", "nova", "--runs", "1", "--label", "after", "--no-analyze",
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"deleted {len(left)} server(s) left by an earlier campaign" in res.stdout
    manifest = json.loads((tmp_path / "runs" / "after" / "manifest.json").read_text())
    assert manifest["leftovers_purged"] == len(left)
    assert pusher.leftovers() == []
