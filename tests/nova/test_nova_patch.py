"""patches/nova run inside nova-compute: the lab's 'patched' driver kit (Nova's own
LibvirtDriver from a patched copy of Debian's nova package) boots the diskless image without a
disk and writes the same hooks as vimprof's drop-in driver; switching kits restarts only
nova-compute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.nova.test_nova_lab import SPAWN_HOOKS, _boot_keep, _console, _domain_xml
from vimprof.lab import nova as lab
from vimprof.pushers.nova import NovaPusher

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def patched_lab(nova_lab):
    """The running lab with nova-compute on the patched kit; back on vimprof's kit after."""
    others = {n: p for n, p in nova_lab.pids.items() if n != "nova-compute"}
    state = lab.up(compute_driver="patched")
    yield state
    back = lab.up(compute_driver="vimprof")
    assert {n: p for n, p in back.pids.items() if n != "nova-compute"} == others
    nova_lab.pids.update(back.pids)  # the session's state: nova-compute has a new pid


@pytest.mark.parametrize("variant", ["tuned", "stock"])
def test_patched_nova_boots_diskless_and_writes_hooks(patched_lab, conn, variant):
    assert patched_lab.driver_kit == "patched"
    assert patched_lab.compute_driver == "libvirt.LibvirtDriver"
    pid = patched_lab.pids["nova-compute"]
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"PYTHONPATH={patched_lab.lab_dir}/nova-patched".encode() in env
    image = patched_lab.image_ids["diskless" if variant == "tuned" else "stock"]
    before = Path(patched_lab.hooks_file).read_text().count("\n")
    rec = _boot_keep(conn, image, patched_lab.flavor_id)
    try:
        assert rec.status == "ACTIVE", rec
        disks = _domain_xml(conn, rec.server_id).findall("devices/disk")
        assert len(disks) == (0 if variant == "tuned" else 1)
        assert "vimprof-testvnf: ready" in _console(patched_lab, rec.server_id)
    finally:
        assert NovaPusher(conn).purge(rec.server_id)
    new = Path(patched_lab.hooks_file).read_text().splitlines()[before:]
    mine = {h["hook"]: h for h in map(json.loads, new) if h["instance_uuid"] == rec.server_id}
    assert set(mine) == set(SPAWN_HOOKS)
    assert {h["variant"] for h in mine.values()} == {variant}
    assert all(h["t_ns"] <= h["end_ns"] for h in mine.values())
    log = (Path(patched_lab.lab_dir) / "logs" / "nova-compute.log").read_text(errors="replace")
    spawned = [line for line in log.splitlines() if f" {pid} " in line
               and rec.server_id in line and "Instance spawned diskless." in line]
    assert len(spawned) == (1 if variant == "tuned" else 0)
