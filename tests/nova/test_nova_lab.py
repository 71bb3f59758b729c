"""Integration tests against the real Nova lab: the lab itself, the pusher, the driver, the
campaign and `vimprof compare`, driven as a user would."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest

from vimprof.errors import VimprofError
from vimprof.lab import nova as lab
from vimprof.pushers.nova import NovaPusher, NovaRunRecord, ServerSpec
from vimprof.schema import assert_valid

pytestmark = pytest.mark.lab

VIMPROF = [sys.executable, "-m", "vimprof.cli"]
SPAWN_HOOKS = ("create_image", "generate_xml", "libvirt_spawn", "wait_boot", "spawn")


def vimprof(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIMPROF, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def vimprof_servers(conn) -> list[dict]:
    return conn.compute.get("/servers?name=^vimprof-", microversion="2.52").json()["servers"]


def test_lab_is_up_with_catalog_images_and_flavor(nova_lab, conn):
    st = lab.status()
    assert st["running"] is True, st
    assert all(state == "up" for state in st["nova_services"].values()), st
    assert {"nova-compute@hostn", "nova-scheduler@hostn", "nova-conductor@hostn"} <= \
        set(st["nova_services"])
    types = {s["type"] for s in conn.identity.get("/services").json()["services"]}
    assert {"identity", "compute", "image", "placement", "network"} <= types
    kernel = conn.image.get(f"/images/{nova_lab.image_ids['kernel']}").json()
    assert kernel["disk_format"] == "aki" and kernel["status"] == "active"
    stock = conn.image.get(f"/images/{nova_lab.image_ids['stock']}").json()
    assert stock["kernel_id"] == kernel["id"] and stock["size"] == 1 << 20
    diskless = conn.image.get(f"/images/{nova_lab.image_ids['diskless']}").json()
    assert diskless["vimprof_diskless"] == "true" and diskless["kernel_id"] == kernel["id"]
    flavor = conn.compute.get(f"/flavors/{nova_lab.flavor_id}").json()["flavor"]
    assert (flavor["ram"], flavor["vcpus"], flavor["disk"]) == (64, 1, 0)
    assert nova_lab.virt_type in ("qemu", "kvm")
    assert nova_lab.compute_driver == lab.DRIVERS["vimprof"]
    # up() on a running lab returns it as is, at once
    t0 = time.monotonic()
    assert lab.up().pids == nova_lab.pids
    assert time.monotonic() - t0 < 30


def _boot_keep(conn, image_id: str, flavor_id: str) -> NovaRunRecord:
    p = NovaPusher(conn)
    rec = NovaRunRecord(run=0, name=f"vimprof-test-{time.time_ns()}")
    p._create(rec, ServerSpec(image_id=image_id, flavor_id=flavor_id))
    return rec


def _domain_xml(conn, server_id: str) -> ElementTree.Element:
    srv = conn.compute.get(f"/servers/{server_id}", microversion="2.52").json()["server"]
    name = srv["OS-EXT-SRV-ATTR:instance_name"]
    out = subprocess.run(["virsh", "-c", "qemu:///system", "dumpxml", name],
                         capture_output=True, text=True, check=True).stdout
    return ElementTree.fromstring(out)


def _console(nova_lab, server_id: str, deadline_s: float = 20.0) -> str:
    log = Path(nova_lab.lab_dir) / "nova" / "instances" / server_id / "console.log"
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if log.exists() and "vimprof-testvnf: ready" in log.read_text(errors="replace"):
            break
        time.sleep(0.2)
    return log.read_text(errors="replace") if log.exists() else ""


@pytest.mark.parametrize("variant", ["stock", "tuned"])
def test_guest_boots_and_xml_matches_variant(nova_lab, conn, variant):
    image = nova_lab.image_ids["diskless" if variant == "tuned" else "stock"]
    rec = _boot_keep(conn, image, nova_lab.flavor_id)
    try:
        assert rec.status == "ACTIVE", rec
        dom = _domain_xml(conn, rec.server_id)
        assert dom.findtext("os/kernel").endswith(f"/{rec.server_id}/kernel")
        disks = dom.findall("devices/disk")
        if variant == "tuned":
            assert disks == [], ElementTree.tostring(dom)
            assert "root=" not in (dom.findtext("os/cmdline") or "")
        else:
            assert len(disks) == 1 and disks[0].find("source").get("file").endswith("/disk")
        assert "vimprof-testvnf: ready" in _console(nova_lab, rec.server_id)
    finally:
        assert NovaPusher(conn).purge(rec.server_id)
    hooks = [json.loads(x) for x in Path(nova_lab.hooks_file).read_text().splitlines()]
    mine = {h["hook"]: h for h in hooks if h["instance_uuid"] == rec.server_id}
    assert set(mine) == set(SPAWN_HOOKS)
    assert {h["variant"] for h in mine.values()} == {variant}
    # the steps follow one another inside the spawn
    order = [mine[h] for h in SPAWN_HOOKS[:4]]
    assert mine["spawn"]["t_ns"] <= order[0]["t_ns"]
    for a, b in zip(order, order[1:], strict=False):
        assert a["end_ns"] <= b["t_ns"]
    assert order[-1]["end_ns"] <= mine["spawn"]["end_ns"]
    if variant == "tuned":  # Nova polls every 0.5 s; the tuned driver every 10 ms
        assert mine["wait_boot"]["end_ns"] - mine["wait_boot"]["t_ns"] < 400_000_000


def test_capture_stock_and_tuned_then_compare(nova_lab, conn, tmp_path):
    for variant in ("stock", "tuned"):
        res = vimprof("capture", "--vim", "nova", "--runs", "3", "--label", variant,
                      "--nova-driver", variant, cwd=tmp_path)
        assert res.returncode == 0, res.stderr + res.stdout
        run = tmp_path / "runs" / variant
        reqs = lines(run / "requests.jsonl")
        assert [r["run"] for r in reqs] == [0, 1, 2]
        assert all(r["ok"] and r["status"] == "ACTIVE" and r["t_gone_ns"] for r in reqs), reqs
        for r in reqs:
            assert r["t_submit_ns"] < r["t_accepted_ns"] < r["t_active_ns"] < r["t_delete_ns"]
            assert r["request_id"].startswith("req-") and r["nova_request_id"].startswith("req-")
            assert r["variant"] == variant and r["polls"] >= 1
        ids = {r["server_id"] for r in reqs}
        events = lines(run / "vim-events.jsonl")
        assert {e["server_id"] for e in events} == ids
        names = {(e["server_id"], e["name"]) for e in events}
        for sid in ids:
            assert (sid, "compute__do_build_and_run_instance") in names
            assert (sid, "compute_terminate_instance") in names
        create = [e for e in events if e["kind"] == "action" and e["name"] == "create"]
        assert {e["request_id"] for e in create} == {r["nova_request_id"] for r in reqs}
        hooks = lines(run / "hooks.jsonl")
        assert {(h["instance_uuid"], h["hook"]) for h in hooks} == \
            {(i, h) for i in ids for h in SPAWN_HOOKS}
        assert {h["variant"] for h in hooks} == {variant}
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["vim"]["name"] == "nova" and manifest["interrupted"] is False
        assert manifest["campaign"]["variant"] == variant
        assert manifest["hosts"]["capture"]["netns"] == lab.NS
        pcap = (run / "capture.pcap").read_bytes()
        assert len(pcap) > 10_000 and pcap[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
        assert len(lines(run / "timelines.jsonl")) == 3
        assert_valid(run)  # every file against vimprof/schemas (docs/run-directory.md)
    res = vimprof("compare", "stock", "tuned", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "spawn" in res.stdout and "total" in res.stdout
    assert vimprof_servers(conn) == []
    assert not lab.guest_pids(), "a guest outlived its campaign"


def test_server_in_error_is_recorded_and_deleted(nova_lab, conn):
    # a diskless image without kernel_id: the driver refuses it, Nova sets ERROR with a fault
    body = {"name": "vimprof-test-nokernel", "disk_format": "raw", "container_format": "bare",
            "vimprof_diskless": "true"}
    image_id = conn.image.post("/images", json=body).json()["id"]
    conn.image.put(f"/images/{image_id}/file", data=b"\0" * 512,
                   headers={"Content-Type": "application/octet-stream"})
    try:
        rec = NovaPusher(conn).run_once(0, f"vimprof-test-err-{time.time_ns()}",
                                        ServerSpec(image_id=image_id,
                                                   flavor_id=nova_lab.flavor_id))
    finally:
        conn.image.delete(f"/images/{image_id}")
    assert not rec.ok and rec.status == "ERROR"
    assert rec.fault and "kernel_id" in rec.fault, rec.fault
    assert rec.t_gone_ns is not None, rec.error  # deleted after the failure
    assert vimprof_servers(conn) == []


def test_bad_credentials_unreachable_cloud_and_missing_image(nova_lab, conn):
    import openstack

    bad = openstack.connect(**{**nova_lab.cloud(), "password": "wrong"})
    with pytest.raises(VimprofError, match="refused the credentials"):
        NovaPusher(bad).check()
    gone = openstack.connect(**{**nova_lab.cloud(), "auth_url": "http://198.18.2.2:5999/v3"})
    with pytest.raises(VimprofError, match="unreachable"):
        NovaPusher(gone).check()
    with pytest.raises(VimprofError, match="image 'no-such-image' not found"):
        NovaPusher(conn).check(ServerSpec(image_id="no-such-image",
                                          flavor_id=nova_lab.flavor_id))
    with pytest.raises(VimprofError, match="flavor 'nope' not found"):
        NovaPusher(conn).check(ServerSpec(image_id=nova_lab.image_ids["stock"],
                                          flavor_id="nope"))


def test_ctrl_c_deletes_in_flight_server(nova_lab, conn, tmp_path):
    proc = subprocess.Popen([*VIMPROF, "capture", "--vim", "nova", "--runs", "50", "--label",
                             "cc", "--no-analyze"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    reqs = tmp_path / "runs" / "cc" / "requests.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (reqs.exists() and reqs.read_text().strip()):
        time.sleep(0.2)
    time.sleep(1.0)  # into the next boot
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    manifest = json.loads((tmp_path / "runs" / "cc" / "manifest.json").read_text())
    assert manifest["interrupted"] is True
    assert 1 <= len(lines(reqs)) < 50
    assert vimprof_servers(conn) == []
    assert not lab.guest_pids()
