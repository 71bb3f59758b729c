"""The micro-VNF driver plugin (xen, qemu backend) and the reactive Nomad, on the real lab.

Stock: the kernel arrives through Nomad's artifact stanza from the lab's artifact server;
tuned: local image, direct spawn, with the reactive Nomad build. Both record the plugin's
timestamp hooks and the floor probe into hooks.jsonl (patches/nomad-xen/README.md).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from vimprof import paths
from vimprof.errors import VimprofError
from vimprof.lab import nomad as lab

pytestmark = pytest.mark.lab

HOOKS = ("init_environment", "spawn", "clean")


def vimprof(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vimprof.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def built(nomad_lab):
    try:
        paths.driver_plugin()
        paths.nomad_reactive_binary()
    except VimprofError as exc:
        pytest.fail(f"scripts/setup must build the plugin and the reactive Nomad: {exc}")
    yield
    lab.up()  # leave the session's lab as the other tests expect it: stock, stock


def _campaign(tmp_path, label: str, *extra: str) -> tuple[list, list, list]:
    res = vimprof("capture", "--runs", "4", "--label", label, *extra, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / label
    return (lines(run / "requests.jsonl"), lines(run / "hooks.jsonl"),
            lines(run / "vim-events.jsonl"))


def test_stock_and_tuned_driver_with_hooks_and_floor(built, tmp_path):
    stock_req, stock_hooks, stock_events = _campaign(tmp_path, "stock", "--driver", "xen-stock")
    tuned_req, tuned_hooks, tuned_events = _campaign(
        tmp_path, "tuned", "--driver", "xen-tuned", "--nomad", "tuned")
    state = lab.current()
    assert state and state.nomad_variant == "tuned" and state.driver_variant == "tuned"

    for reqs, hooks, events, variant in ((stock_req, stock_hooks, stock_events, "stock"),
                                         (tuned_req, tuned_hooks, tuned_events, "tuned")):
        assert [r["ok"] for r in reqs] == [True] * 4, [r.get("error") for r in reqs]
        allocs = {r["alloc_id"] for r in reqs}
        per_alloc = {a: sorted(h["hook"] for h in hooks if h.get("alloc_id") == a)
                     for a in allocs}
        assert per_alloc == {a: sorted(HOOKS) for a in allocs}, per_alloc
        for h in hooks:
            assert h["end_ns"] >= h["t_ns"] > 0
            if h.get("alloc_id"):
                assert (h["driver"], h["variant"], h["backend"]) == ("xen", variant, "qemu")
        floor = [h for h in hooks if h.get("probe") == "floor"]
        assert sorted(h["run"] for h in floor) == [0, 1, 2, 3]
        downloads = [e for e in events if e.get("name") == "Downloading Artifacts"]
        assert len(downloads) == (4 if variant == "stock" else 0), events[:12]

    # The reactive Nomad tells the server at once: no ~1 s lazy notification.
    stock_ms = statistics.median(r["running_ms"] for r in stock_req)
    tuned_ms = statistics.median(r["running_ms"] for r in tuned_req)
    assert tuned_ms < 0.7 * stock_ms, (stock_ms, tuned_ms)
