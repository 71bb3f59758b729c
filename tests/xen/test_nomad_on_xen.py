"""Nomad on Xen: campaigns through the Nomad server (hostc) and a client in the Xen lab's dom0
whose micro-VNF driver plugin runs PV guests with `xl` (vimprof.lab.nomad_xen).

Real parts only: Xen 4.17 in QEMU/TCG, Nomad v1.6.3, the built plugin, xenstored through pyxs.
Takes both machine-wide locks (the Xen lab's and the Nomad lab's) through their fixtures.
Skipped, with the reason, when scripts/setup-xen or scripts/setup has not run.
"""

from __future__ import annotations

import _thread
import json
import threading
import time

import pytest
from rich.console import Console

from vimprof import rundir
from vimprof.lab import nomad_xen, xen
from vimprof.schema import assert_valid

TOLERANCE_NS = 60_000_000  # dom0's clock is stepped onto the host's to within ~10-20 ms


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def console() -> Console:
    return Console(quiet=True)


def _campaign(tmp_path, console, driver: str, runs: int, floor: bool = True):
    from vimprof.campaigns import nomad as campaign

    target = campaign.lab_target("auto", console, "stock", driver, backend="xl")
    run = rundir.RunDir.create(f"xl-{driver}", tmp_path, force=True)
    spec = campaign.CampaignSpec(label=f"xl-{driver}", runs=runs, memory_mb=32,
                                 timeout_s=120.0, driver=driver, floor=floor)
    return target, run, spec


def test_xl_job_spec_targets_the_dom0_node_without_a_ready_line():
    from vimprof.pushers.nomad import GuestSpec, job_spec

    guest = GuestSpec(kernel="/lab/images/vnfguest.xen", memory_mb=32, driver="xen-tuned",
                      backend="xl", ready_line=None)
    task = job_spec("j", guest)["TaskGroups"][0]["Tasks"][0]
    assert task["Config"] == {"backend": "xl", "kernel": "vnfguest.xen"}
    assert task["Resources"]["MemoryMB"] == 32
    assert task["Constraints"] == [{"LTarget": "${attr.driver.xen.xl}", "Operand": "=",
                                    "RTarget": "true"}]
    qemu = job_spec("j", GuestSpec(kernel="/k", driver="xen-tuned"))["TaskGroups"][0]
    assert qemu["Tasks"][0]["Constraints"] == [  # never on the dom0 node (no QEMU there)
        {"LTarget": "${attr.driver.xen.qemu}", "Operand": "=", "RTarget": "true"}]
    with pytest.raises(ValueError, match="backend must be"):
        job_spec("j", GuestSpec(kernel="/k", driver="xen-tuned", backend="kvm"))


def test_floor_config_is_the_plugins_domain_without_a_vif():
    cfg = nomad_xen.floor_config()
    assert 'vif = [ ]' in cfg and "memory = 32" in cfg and 'type = "pv"' in cfg
    assert f'kernel = "{nomad_xen.DOM0_IMAGES}/{nomad_xen.GUEST_KERNEL}"' in cfg
    assert 'on_poweroff = "destroy"' in cfg


@pytest.mark.parametrize("driver", ["xen-tuned", "xen-stock"])
def test_campaign_through_nomad_on_xen(xen_lab, nomad_lab, tmp_path, console, driver):
    from vimprof.campaigns import nomad as campaign

    target, run, spec = _campaign(tmp_path, console, driver, runs=2)
    assert target.backend == "xl" and target.ready_line is None
    assert nomad_xen.current() is not None
    failures = campaign.run_campaign(spec, target, run, console)
    reqs = _jsonl(run.file(rundir.REQUESTS))
    assert failures == 0, [r["error"] for r in reqs]
    assert len(reqs) == 2 and all(r["ok"] and r["client_status"] == "complete" for r in reqs)

    hooks = _jsonl(run.file(rundir.HOOKS))
    variant = driver.removeprefix("xen-")
    for r in reqs:
        mine = [h for h in hooks if h.get("alloc_id") == r["alloc_id"]]
        by_hook = {h["hook"]: h for h in mine}
        assert set(by_hook) == {"init_environment", "spawn", "clean", "domain_created",
                                "domain_released"}, mine
        for name in ("init_environment", "spawn", "clean"):
            h = by_hook[name]
            assert h["backend"] == "xl" and h["variant"] == variant
            assert h["node"] == nomad_xen.NODE_NAME
        spawn, created = by_hook["spawn"], by_hook["domain_created"]
        # the domain appears in XenStore (host clock) inside the plugin's spawn (dom0's clock)
        assert spawn["t_ns"] - TOLERANCE_NS <= created["t_ns"] <= spawn["end_ns"] + TOLERANCE_NS
        assert created["t_ns"] <= created["end_ns"]
        if variant == "tuned":  # `xl create` returned: the domain was built (introduced)
            assert created["end_ns"] <= spawn["end_ns"] + TOLERANCE_NS
        # stock (`xl create -F` under the executor) ends spawn once `xl domid` answers, which
        # can be before xenstored has the domain introduced: no such bound there
        assert created["name"] == f"nomad-micro-vnf-{r['alloc_id'][:8]}"
        assert by_hook["domain_released"]["domid"] == created["domid"]
        assert r["t_stop_ns"] <= by_hook["domain_released"]["t_ns"] <= r["t_gone_ns"] + 1e9

    floor = [h for h in hooks if h.get("probe") == "floor" and "alloc_id" not in h
             and h["hook"] in ("spawn", "clean")]
    assert sorted((h["run"], h["hook"]) for h in floor) == [
        (0, "clean"), (0, "spawn"), (1, "clean"), (1, "spawn")]
    assert all(h["backend"] == "xl" and h["guest"] == nomad_xen.FLOOR_NAME for h in floor)
    assert all(0 < h["end_ns"] - h["t_ns"] < 30e9 for h in floor)

    events = _jsonl(run.file(rundir.VIM_EVENTS))
    names = [e["name"] for e in events]
    assert names.count("Started") == 2 and names.count("Driver") >= 2
    if variant == "stock":  # the kernel came as an artifact from hostc
        assert names.count("Downloading Artifacts") == 2

    manifest = json.loads(run.file(rundir.MANIFEST).read_text())
    assert manifest["driver"] == {"name": "xen", "variant": variant, "backend": "xl"}
    assert manifest["hypervisor"]["name"] == "xen"
    assert manifest["xen"]["leaked_domains"] == [] and manifest["xen"]["watcher_error"] is None
    assert all(abs(c["offset_ms"]) < 1000 for c in manifest["xen"]["dom0_clock"])
    assert nomad_xen.domains() == []  # xl destroy through the plugin; nothing left
    assert_valid(run)  # every file against vimprof/schemas (docs/run-directory.md)


def test_missing_kernel_fails_the_run_with_the_drivers_message(xen_lab, nomad_lab):
    from vimprof.pushers.nomad import GuestSpec, NomadPusher

    state = nomad_xen.up(driver_variant="tuned")
    pusher = NomadPusher(state.http_addr, timeout_s=90)
    guest = GuestSpec(kernel="missing-vnf.xen", memory_mb=32, driver="xen-tuned",
                      backend="xl", ready_line=None)
    rec = pusher.run_once(0, "vimprof-xl-reject-0000", guest)
    assert not rec.ok and rec.client_status == "failed"
    assert 'kernel "missing-vnf.xen" not found' in rec.error, rec.error
    assert nomad_xen.DOM0_IMAGES in rec.error
    assert nomad_xen.domains() == []


def test_interrupted_campaign_destroys_its_domain(xen_lab, nomad_lab, tmp_path, console):
    """Ctrl-C while a guest runs: the job is purged, the domain destroyed, the run kept."""
    from vimprof.campaigns import nomad as campaign

    target, run, spec = _campaign(tmp_path, console, "xen-tuned", runs=5, floor=False)
    seen = threading.Event()

    def interrupt_when_a_domain_runs() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(d.startswith(nomad_xen.DOMAIN_PREFIX) for d in nomad_xen.domains()):
                seen.set()
                _thread.interrupt_main()
                return
            time.sleep(0.2)

    t = threading.Thread(target=interrupt_when_a_domain_runs, daemon=True)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        campaign.run_campaign(spec, target, run, console)
    t.join(5)
    assert seen.is_set()
    manifest = json.loads(run.file(rundir.MANIFEST).read_text())
    assert manifest["interrupted"] is True
    deadline = time.monotonic() + 30
    while nomad_xen.domains() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert nomad_xen.domains() == []
    assert len(_jsonl(run.file(rundir.REQUESTS))) < 5


def test_down_stops_the_dom0_client(xen_lab, nomad_lab):
    import requests

    state = nomad_xen.current() or nomad_xen.up()
    done = nomad_xen.down()
    assert any("stopped the Nomad client" in line for line in done)
    assert nomad_xen.current() is None
    assert xen.run(f"kill -0 {state.client_pid}").rc != 0
    nodes = requests.get(f"{state.http_addr}/v1/nodes", timeout=5).json()
    assert all(n["ID"] != state.node_id for n in nodes)  # purged from the server
    assert nomad_xen.down() == []  # idempotent
