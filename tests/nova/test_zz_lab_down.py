"""Last of the Nova lab tests (file order): `down` stops everything and leaves nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vimprof.lab import netns
from vimprof.lab import nova as lab

pytestmark = pytest.mark.lab


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_down_leaves_nothing(nova_lab):
    pids = list(lab.current().pids.values())  # as saved: a kit switch replaced nova-compute
    assert pids and all(_alive(p) for p in pids)
    done = lab.down()
    assert any(line.startswith("stopped nova-compute") for line in done), done
    assert not netns.exists(lab.NS)
    assert netns.ip("link", "show", lab.IFACE, check=False).returncode != 0
    assert not Path(nova_lab.lab_dir).exists()
    assert [p for p in pids if _alive(p)] == []
    assert not list(Path("/etc/libvirt/qemu").glob("instance-*.xml"))
    assert lab.current() is None and lab.status()["running"] is False
    assert lab.down() == []  # idempotent: nothing left to do
