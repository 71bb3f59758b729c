"""The real Xen lab: Xen 4.17 + PV dom0 in QEMU/TCG, xl, pyxs events, the floor probe.

Tests run in file order: the failing boot first (no lab yet), then the lab brought up once
(session fixture), and last the tear-down check. Skipped, with the reason, when
scripts/setup-xen has not run or the machine cannot host the lab.
"""

from __future__ import annotations

import signal
import statistics
import time
from pathlib import Path

import pytest

from vimprof.errors import VimprofError
from vimprof.lab import netns, xen


def _lab_processes() -> list[int]:
    return netns.pids(xen.NETNS)


def test_boot_that_times_out_names_its_stage_and_cleans_up(xen_lab_lock):
    xen.down()
    t0 = time.monotonic()
    with pytest.raises(VimprofError) as err:
        xen.up(timeout_s=3.0)  # dom0 needs well over 3 s under TCG
    msg = str(err.value)
    assert "stage '" in msg and "no progress within 3 s" in msg
    assert any(f"stage '{name}'" in msg for name, _ in xen.STAGES)
    assert "--- console" in msg
    assert time.monotonic() - t0 < 20
    assert not netns.exists(xen.NETNS)
    assert xen.current() is None
    assert not (xen.lab_dir() / "xenstored.sock").exists()


def test_qemu_refusing_the_images_is_reported_as_the_qemu_stage(xen_lab_lock, tmp_path,
                                                                monkeypatch):
    bad = tmp_path / "xen" / "current"
    bad.mkdir(parents=True)
    for name in ("xen", "vmlinux", "dom0.cpio"):
        (bad / name).write_bytes(b"not a kernel\n" * 100)
    (bad / "manifest.json").write_text("{}")
    (bad / "READY").touch()
    monkeypatch.setenv("VIMPROF_CACHE", str(tmp_path))
    with pytest.raises(VimprofError, match=r"stage 'QEMU' failed .*QEMU exited"):
        xen.up(timeout_s=60)
    assert not netns.exists(xen.NETNS) and xen.current() is None


def test_lab_comes_up_with_dom0_and_is_idempotent(xen_lab):
    assert 0 < xen_lab.boot_s < xen.BOOT_TIMEOUT_S
    assert list(xen_lab.stage_s) == [name for name, _ in xen.STAGES] + ["host relays"]
    info = xen.status()
    assert info["running"] is True and info["domains"] == ["Domain-0"]
    again = xen.up()
    assert again.qemu_pid == xen_lab.qemu_pid  # the running lab, not a new boot
    console = Path(xen_lab.console_log).read_text(errors="replace")
    assert "Xen version 4.17" in console and "vimprof-dom0: ready" in console


def test_commands_in_dom0_return_output_status_and_timing(xen_lab):
    res = xen.run("echo hello; echo oops >&2; exit 3")
    assert res.rc == 3
    assert res.output.splitlines() == ["hello", "oops"]
    rc, t0, t1 = res.markers[-1]
    assert rc == 3 and t1 >= t0
    assert res.sent_ns < res.received_ns
    with pytest.raises(VimprofError, match="exit 1"):
        xen.run("false", check=True)
    with pytest.raises(VimprofError, match="one line"):
        xen.run("echo a\necho b")
    # xl and xenstored answer in dom0
    assert "Domain-0" in xen.run("xl list", check=True).output
    assert xen.run("xenstore-read /local/domain/0/name", check=True).output.strip() == "Domain-0"


def test_xl_create_destroy_seen_by_the_xenstore_watcher(xen_lab, tmp_path):
    from vimprof.drivers.xenstore import DomainWatcher

    out = tmp_path / "hooks.jsonl"
    with DomainWatcher(xen_lab.xenstored_socket, out=out) as w:
        assert w.records == []  # Domain-0 was there before: no record
        create = xen.run(f"xl create {xen.TEST_GUEST_CFG}", check=True)
        created = w.wait_for("domain_created", name=xen.TEST_GUEST_NAME, timeout_s=30)
        # the watch events arrive while `xl create` runs
        assert create.sent_ns <= created["t_ns"] <= created["end_ns"] <= create.received_ns
        domid = created["domid"]
        assert domid > 0 and created["source"] == "xenstore"
        listed = xen.run(f"xl domid {xen.TEST_GUEST_NAME}", check=True).output.strip()
        assert int(listed) == domid
        destroy = xen.run(f"xl destroy {xen.TEST_GUEST_NAME}", check=True)
        released = w.wait_for("domain_released", domid=domid, timeout_s=30)
        assert destroy.sent_ns <= released["t_ns"] <= released["end_ns"]
        assert released["end_ns"] - destroy.received_ns < 5e9
        assert released["name"] == xen.TEST_GUEST_NAME
        assert w.events > 10  # the watches fired for the domain's XenStore entries
    hooks = [line for line in out.read_text().splitlines() if line]
    assert len(hooks) == 2
    # the PV GRUB test guest really ran: xenconsoled logged its line
    log = xen.run(f"cat /var/log/xen/console/guest-{xen.TEST_GUEST_NAME}.log", check=True)
    assert "vimprof-testguest: halting" in log.output


def test_xl_floor_probe_times_create_and_destroy(xen_lab):
    from vimprof.drivers.xl_floor import xl_floor_probe

    recs = xl_floor_probe(runs=3, first_run=5)
    assert [(r["hook"], r["run"]) for r in recs] == [
        ("spawn", 5), ("clean", 5), ("spawn", 6), ("clean", 6), ("spawn", 7), ("clean", 7)]
    for r in recs:
        assert r["probe"] == "floor" and r["backend"] == "xl" and r["guest"] == "vp-test"
        assert 0 < r["end_ns"] - r["t_ns"] < 30e9
    assert len({r["domid"] for r in recs}) == 3  # a new domain each run
    spawn = statistics.median((r["end_ns"] - r["t_ns"]) / 1e6 for r in recs
                              if r["hook"] == "spawn")
    print(f"xl create median {spawn:.0f} ms")
    assert "vp-test" not in xen.run("xl list", check=True).output  # destroyed


def test_xl_errors_surface_with_xls_message(xen_lab):
    from vimprof.drivers.xl_floor import xl_floor_probe

    with pytest.raises(VimprofError, match=r"xl create /nonexistent.cfg.* failed in dom0 "
                       r"\(exit [1-9]\d*\): Failed to read config file"):
        xl_floor_probe(runs=1, cfg="/nonexistent.cfg")


def test_clickos_install_writes_the_router_config_into_xenstore(xen_lab):
    """images/clickos/clickos-install.sh against a real domain made to look like ClickOS."""
    from pyxs import Client

    here = Path(__file__).resolve().parents[2] / "images" / "clickos"
    click = (here / "vnf" / "firewall.click").read_bytes()
    xen.put_file("/var/lib/vimprof/firewall.click", click)
    xen.put_file("/usr/lib/vimprof/clickos-install.sh",
                 (here / "clickos-install.sh").read_bytes(), mode=0o755)
    name = xen.TEST_GUEST_NAME
    xen.run(f"xl create -p {xen.TEST_GUEST_CFG}", check=True)  # paused, as for ClickOS
    try:
        domid = int(xen.run(f"xl domid {name}", check=True).output)
        base = f"/local/domain/{domid}/data/clickos"
        xen.run(f"xenstore-write {base} ''", check=True)  # what a booting ClickOS creates
        out = xen.run(f"/usr/lib/vimprof/clickos-install.sh {name} "
                      "/var/lib/vimprof/firewall.click", check=True).output
        assert "router 0" in out and "Running" in out
        with Client(unix_socket_path=xen_lab.xenstored_socket) as c:
            chunks = sorted(c.list(f"{base}/0/config".encode()), key=int)
            assert len(chunks) == -(-len(click) // 512)
            text = b"".join(c.read(f"{base}/0/config/".encode() + n) for n in chunks)
            assert text == click
            assert c.read(f"{base}/0/status".encode()) == b"Running"
            assert c.read(f"{base}/0/config_name".encode()) == b"firewall"
    finally:
        xen.run(f"xl destroy {name}")


def test_host_share_is_read_write_from_dom0(xen_lab):
    share = Path(xen_lab.share_dir)
    (share / "from-host").write_text("hello dom0\n")
    out = xen.run(f"cat {xen.DOM0_SHARE}/from-host && echo back > {xen.DOM0_SHARE}/from-dom0",
                  check=True).output
    assert out == "hello dom0\n"
    assert (share / "from-dom0").read_text() == "back\n"


def test_daemons_run_detached_in_dom0(xen_lab):
    share = Path(xen_lab.share_dir)
    pid = xen.start_daemon(f"while :; do echo tick >> {xen.DOM0_SHARE}/ticks; sleep 0.2; done",
                           f"{xen.DOM0_SHARE}/daemon.log")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (share / "ticks").exists():
        time.sleep(0.1)
    time.sleep(1)
    assert (share / "ticks").read_text().count("tick") >= 2  # still running after start
    assert xen.run(f"kill {pid}").rc == 0
    with pytest.raises(VimprofError, match="exited at once"):
        xen.start_daemon("exit 3", "/tmp/daemon.log")


def test_linked_namespace_reaches_dom0_and_back(xen_lab):
    """A namespace (as the Nomad server's hostc will be) talks TCP to dom0, dom0 answers."""
    import subprocess
    import sys

    ns = "vxprobe"
    netns.create(ns)
    try:
        netns.ip("-n", ns, "addr", "add", "198.18.2.77/32", "dev", "lo")
        ends = xen.link_namespace(ns, routes=["198.18.2.77/32"])
        assert xen.link_namespace(ns, routes=["198.18.2.77/32"]) == ends  # idempotent
        client = (f"import socket; s = socket.create_connection(('{xen.DOM0_IP}', "
                  f"{xen.COMMAND_PORT}), timeout=30); s.sendall(b'echo via-link\\n'); d = b''\n"
                  "while (c := s.recv(4096)): d += c\n"
                  "print(d.decode())")
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", client],
                             capture_output=True, text=True, timeout=60)
        assert "via-link" in out.stdout and "@@vimprof rc=0" in out.stdout, out.stderr
        # dom0 -> the namespace's own address, through hostx
        assert "1 packets received" in xen.run("ping -c1 -W10 198.18.2.77").output
    finally:
        netns.delete(ns)


def test_nomad_client_in_dom0_joins_the_server_in_hostc(xen_lab, nomad_lab):
    """Nomad on Xen: server in hostc (the Nomad lab), client agent in dom0 (HostL)."""
    import requests

    from vimprof.lab import nomad

    xen.link_namespace(nomad.SERVER_NS, routes=[f"{nomad.SERVER_IP}/32"])
    pid = xen.start_nomad_client(nomad_lab.nomad, [f"{nomad.SERVER_IP}:{nomad.RPC_PORT}"])
    node = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and node is None:
            for n in requests.get(f"{nomad_lab.http_addr}/v1/nodes", timeout=5).json():
                if n["Name"] == "xen-dom0" and n["Status"] == "ready":
                    node = n
            time.sleep(1)
        log = Path(xen_lab.share_dir, "nomad-client.log").read_text(errors="replace")
        assert node is not None, log[-2000:]
        assert node["Address"] == xen.DOM0_IP
        detail = requests.get(f"{nomad_lab.http_addr}/v1/node/{node['ID']}", timeout=5).json()
        assert detail["Attributes"]["unique.network.ip-address"] == xen.DOM0_IP
    finally:
        xen.run(f"kill {pid}")
        if node is not None:  # leave the Nomad lab as it was for other tests
            requests.put(f"{nomad_lab.http_addr}/v1/node/{node['ID']}/purge", timeout=5)


def test_watcher_on_a_dead_socket_fails_fast(tmp_path):
    from vimprof.drivers.xenstore import DomainWatcher

    t0 = time.monotonic()
    with pytest.raises(VimprofError, match="connect failed"):
        DomainWatcher(tmp_path / "nothing.sock").start()
    assert time.monotonic() - t0 < 5


def test_down_leaves_nothing_behind(xen_lab):
    done = xen.down()
    assert any("QEMU" in line for line in done)
    assert not netns.exists(xen.NETNS) and _lab_processes() == []
    for name in ("xenstored.sock", "command.sock", "lab.json", "share"):
        assert not (xen.lab_dir() / name).exists()
    assert xen.down() == []  # idempotent
    assert xen.status()["running"] is False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_during_lab_up_tears_it_down(_xen_lab_session, tmp_path, sig):
    """`vimprof lab up xen` stopped by SIGTERM or SIGHUP mid-boot (issue 20): exit 128 +
    signal, and the half-built lab is gone: no QEMU, no namespace."""
    import subprocess
    import sys
    import time

    xen.down()
    p = subprocess.Popen([sys.executable, "-m", "vimprof.cli", "lab", "up", "xen"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not netns.exists(xen.NETNS) and time.monotonic() < deadline:  # the boot has begun
        time.sleep(0.1)
    time.sleep(2.0)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + sig, err
    assert not netns.exists(xen.NETNS)
    assert xen.current() is None
