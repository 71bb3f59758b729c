"""The micro-VNF driver plugin's Go tests (Nomad's driver harness, qemu for real, xl goldens)
run with the rest of the suite, so CI exercises them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

DRIVER = Path(__file__).parent.parent / "patches" / "nomad-xen" / "driver"


def _executors() -> set[int]:
    """PIDs of Go test binaries re-executed as the plugin's executor (would be leaks)."""
    out = subprocess.run(["pgrep", "-f", r"xen\.test executor"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


@pytest.mark.skipif(shutil.which("go") is None, reason="Go is not installed: run scripts/setup")
def test_go_tests_pass_and_leak_no_executor():
    before = _executors()
    env = dict(os.environ, GOFLAGS="-mod=readonly")
    res = subprocess.run(["go", "test", "-count=1", "./..."], cwd=DRIVER, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "ok  \tvimprof.local/nomad-driver-xen/xen" in res.stdout
    assert _executors() - before == set()
