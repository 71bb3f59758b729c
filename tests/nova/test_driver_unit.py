"""Unit tests of the diskless driver's XML pieces, run on Debian's /usr/bin/python3 (Nova's).

The driver subclasses nova.virt.libvirt.driver.LibvirtDriver, which only imports where Nova is
installed: each test runs a small script under /usr/bin/python3 that builds the guest config
pieces the driver overrides (no libvirt connection: the driver object is made without
__init__) and prints JSON. Skipped when Nova is not installed (scripts/setup-openstack).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from xml.etree import ElementTree

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
UUID = "6a1b3e0c-1d4c-4a4e-9b5e-2b9e1f1c3d4e"


def _nova_python() -> str | None:
    try:
        ok = subprocess.run([SYSTEM_PYTHON, "-c", "import nova.virt.libvirt.driver"],
                            capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return None
    return SYSTEM_PYTHON if ok else None


pytestmark = pytest.mark.skipif(_nova_python() is None,
                                reason="Nova is not importable by /usr/bin/python3: run "
                                       "scripts/setup-openstack")

PRELUDE = f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
import nova.conf
nova.conf.CONF([], project="nova", default_config_files=[])
from nova import objects
objects.register_all()
from nova.virt.libvirt import config as vc
from vimprof.drivers.nova import diskless

def driver(diskless_uuids):
    d = diskless.DisklessLibvirtDriver.__new__(diskless.DisklessLibvirtDriver)
    d._vimprof_diskless = set(diskless_uuids)
    d._vimprof_spawning = {{u: "tuned" for u in diskless_uuids}}
    return d

def guest():
    g = vc.LibvirtConfigGuest()
    g.virt_type = "qemu"; g.name = "instance-00000001"; g.uuid = {UUID!r}
    g.memory = 64 * 1024; g.vcpus = 1; g.os_type = "hvm"
    return g

def instance(props):
    sysmeta = {{"image_" + k: v for k, v in props.items()}}
    return objects.Instance(uuid={UUID!r}, kernel_id="k-1", ramdisk_id=None,
                            image_ref="i-1", system_metadata=sysmeta)
"""


def run_py(body: str) -> dict:
    script = PRELUDE + textwrap.dedent(body)
    proc = subprocess.run([SYSTEM_PYTHON, "-c", script], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_diskless_property_read_from_system_metadata():
    out = run_py("""
        print(json.dumps([diskless.is_diskless(instance(p).system_metadata) for p in
            ({"vimprof_diskless": "true"}, {"vimprof_diskless": "False"}, {},
             {"kernel_id": "k"})]))
    """)
    assert out == [True, False, False, False]


def test_tuned_xml_has_kernel_console_and_no_disk():
    out = run_py(f"""
        d = driver([{UUID!r}])
        inst = instance({{"vimprof_diskless": "true"}})
        meta = objects.ImageMeta.from_dict({{"properties": {{}}}})
        g = guest()
        d._set_guest_for_inst_kernel(inst, g, "/i/{UUID}", None, meta)
        devs = d._get_guest_storage_config(None, inst, meta, {{"mapping": {{}}}}, None, None,
                                           None, None)
        for dev in devs:
            g.add_device(dev)
        print(json.dumps({{"xml": g.to_xml(), "devices": len(devs)}}))
    """)
    assert out["devices"] == 0
    dom = ElementTree.fromstring(out["xml"])
    assert dom.find("devices/disk") is None and dom.find(".//disk") is None
    assert dom.findtext("os/kernel") == f"/i/{UUID}/kernel"
    assert dom.findtext("os/cmdline") == "console=ttyS0"  # no root= without a disk
    assert dom.get("type") == "qemu" and dom.findtext("memory") == str(64 * 1024)


def test_os_command_line_property_wins_for_diskless():
    out = run_py(f"""
        d = driver([{UUID!r}])
        meta = objects.ImageMeta.from_dict(
            {{"properties": {{"os_command_line": "click.cfg=/vnf.click"}}}})
        g = guest()
        d._set_guest_for_inst_kernel(instance({{"vimprof_diskless": "1"}}), g, "/i", None,
                                     meta)
        print(json.dumps({{"xml": g.to_xml()}}))
    """)
    assert ElementTree.fromstring(out["xml"]).findtext("os/cmdline") == "click.cfg=/vnf.click"


def test_stock_instance_keeps_nova_kernel_command_line():
    out = run_py("""
        d = driver([])
        meta = objects.ImageMeta.from_dict({"properties": {}})
        g = guest()
        d._set_guest_for_inst_kernel(instance({}), g, "/i", "/dev/vda", meta)
        print(json.dumps({"xml": g.to_xml()}))
    """)
    cmdline = ElementTree.fromstring(out["xml"]).findtext("os/cmdline")
    assert cmdline.startswith("root=/dev/vda console=")  # Nova's own, untouched


def test_poll_interval_from_environment():
    out = run_py("""
        import os
        vals = []
        for v in (None, "0.002", "junk", "0"):
            if v is None:
                os.environ.pop(diskless.POLL_ENV, None)
            else:
                os.environ[diskless.POLL_ENV] = v
            vals.append(diskless.poll_interval_s())
        print(json.dumps(vals))
    """)
    assert out == [0.01, 0.002, 0.01, 0.001]


def test_tuned_guest_has_no_balloon_or_rng_stock_keeps_novas():
    out = run_py(f"""
        d = driver([{UUID!r}])
        meta = objects.ImageMeta.from_dict({{"properties": {{}}}})
        flavor = objects.Flavor(extra_specs={{}})
        res = {{}}
        for name, uuid in (("tuned", {UUID!r}), ("stock", "00000000-0000-4000-8000-000000000001")):
            g = guest(); g.uuid = uuid
            d._guest_add_memory_balloon(g)
            d._add_rng_device(g, flavor, meta)
            res[name] = g.to_xml()
        print(json.dumps(res))
    """)
    tuned = ElementTree.fromstring(out["tuned"])
    assert [b.get("model") for b in tuned.findall("devices/memballoon")] == ["none"]
    assert tuned.find("devices/rng") is None
    stock = ElementTree.fromstring(out["stock"])
    assert [b.get("model") for b in stock.findall("devices/memballoon")] == ["virtio"]
    assert stock.find("devices/rng") is not None  # Nova's default: hw_rng allowed


def test_lifecycle_events_of_a_guest_just_launched_by_tuned_spawn_are_dropped():
    out = run_py(f"""
        import time
        from nova.virt import event as ev
        d = driver([])
        got = []
        d._compute_event_callback = lambda e: got.append([e.uuid, e.transition])
        other = "0" * 8 + {UUID[8:]!r}
        d._vimprof_launched = {{{UUID!r}: time.monotonic() + 5, other: time.monotonic() - 1}}
        for uuid, t in (({UUID!r}, ev.EVENT_LIFECYCLE_STARTED),
                        ({UUID!r}, ev.EVENT_LIFECYCLE_RESUMED),
                        ({UUID!r}, ev.EVENT_LIFECYCLE_STOPPED),
                        (other, ev.EVENT_LIFECYCLE_STARTED)):
            d.emit_event(ev.LifecycleEvent(uuid, t))
        print(json.dumps({{"got": got, "left": sorted(d._vimprof_launched)}}))
    """)
    other = "0" * 8 + UUID[8:]
    # Started/Resumed of the fresh tuned guest are dropped; its Stopped passes, and so does
    # Started of a guest whose launch window is over (and that entry is forgotten)
    assert out["got"] == [[UUID, 1], [other, 0]]
    assert out["left"] == [UUID]
