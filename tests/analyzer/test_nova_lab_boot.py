"""The facts a real OpenStack boot capture must yield (tests/data/nova-lab-boot).

Recorded passively with `tcpdump -i any -s 0` in the OpenStack lab's network namespace
(hostn: Nova 26.2.2 Zed from Debian 12, RabbitMQ on 127.0.0.1:5672, nova-api and glance at
198.18.2.2) while another session booted and deleted servers (a diskless micro-VNF guest,
networks "none", TCG); cut to the 5.6 s of one boot + delete and to the nova-api, glance,
keystone and AMQP ports (633 packets, Linux SLL2), scrubbed with
`python -m vimprof.analyzer.scrub` (Keystone tokens blanked, lengths kept).

Independent source: nova-compute's own log for this instance (same machine, same clock):
  14:20:56.111 "Instance spawned"; 14:20:56.112 "Took 0.77 seconds to spawn the instance on
  the hypervisor"; 14:20:56.260 "Took 1.23 seconds to build instance".
"""

from __future__ import annotations

import json
from pathlib import Path

from vimprof.analyzer.pipeline import analyze
from vimprof.phases import NOVA

CAPTURE = Path(__file__).parent.parent / "data" / "nova-lab-boot" / "capture.pcap"
SERVER = "c2809fd3-7a4d-4361-9c2f-1b7cd8416587"
SPAWNED_LOG_NS = 1795270856111_000000  # 2026-11-21 14:20:56.111 UTC, nova-compute log
MS = 1_000_000


def _timeline():
    tls, d, warnings = analyze(CAPTURE)
    assert d.warnings == [] and warnings == [] and d.counts["tcp_gaps"] == 0
    assert d.counts["amqp_messages"] == 138 and d.counts["http_messages"] == 53
    (tl,) = tls
    return tl


def test_complete_boot_and_delete_timeline():
    tl = _timeline()
    assert tl["vim"] == "nova" and tl["instance"] == SERVER
    assert tl["complete"] and tl["issues"] == []
    ph = tl["phases"]
    assert set(ph) >= set(NOVA.all) | {"glance", "network", "spawn", "delete"}
    assert "keystone" not in ph  # nova-api's token cache was warm: no validation request
    ms = {k: v["ms"] for k, v in ph.items()}
    assert ms == {
        "api": 118.957, "glance": 28.275, "conductor": 16.037, "scheduler": 179.609,
        "conductor_build": 177.779, "compute": 1134.656, "network": 52.586, "spawn": 803.7,
        "ready": 1086.91, "total": 2707.26, "delete": 2551.622,
    }
    # the stack lays end to end: about total (api and conductor overlap by the 6.7 ms
    # between the schedule_and_build_instances cast and the 202)
    stack = sum(ms[p] for p in NOVA.stack)
    assert abs(stack - ms["total"]) < 10
    # the two glance GETs (root image, then its kernel_id) are inside the api phase
    assert ph["api"]["start_ns"] < ph["glance"]["start_ns"] < ph["glance"]["end_ns"]
    assert ph["glance"]["end_ns"] < ph["api"]["end_ns"]
    assert ph["ready"]["to"] == "GET /servers/<id> ACTIVE"
    assert ph["delete"]["to"] == "GET /servers/<id> 404"


def test_phases_agree_with_nova_computes_own_log():
    tl = _timeline()
    ph = tl["phases"]
    # "Took 0.77 seconds to spawn": driver.spawn, inside our spawn phase (task_state
    # spawning saved -> vm_state active saved)
    assert abs(ph["spawn"]["ms"] - 770) < 50
    assert ph["spawn"]["start_ns"] < SPAWNED_LOG_NS < ph["spawn"]["end_ns"]
    # "Took 1.23 seconds to build instance": the compute__do_build_and_run_instance action
    # event, whose start and finish calls are on the wire
    ev = {e["name"]: e["t_ns"] for e in tl["events"]}
    action = (ev["instance action event compute__do_build_and_run_instance finish"]
              - ev["instance action event compute__do_build_and_run_instance start"])
    assert abs(action / MS - 1230) < 50
    assert abs(ph["compute"]["ms"] - 1230) < 150


def test_events_and_no_credential():
    tl = _timeline()
    names = [e["name"] for e in tl["events"]]
    assert names.count("GET /servers/<id> ACTIVE") == 1  # later polls are no news
    saves = [n for n in names if n.startswith("instance save task_state=")]
    assert saves == [
        "instance save task_state=None", "instance save task_state=networking",
        "instance save task_state=block_device_mapping", "instance save task_state=spawning",
        "instance save task_state=None",
    ]
    build = next(e for e in tl["events"] if e["name"] == "build_and_run_instance cast")
    assert build["attrs"]["routing_key"] == "compute.hostn" and build["attrs"]["node"] == "vm"
    finish = next(e for e in tl["events"]
                  if e["name"] == "instance action event compute__do_build_and_run_instance finish")
    assert "failure" not in finish["attrs"]
    text = json.dumps(tl)
    assert "gAAAA" not in text and "auth_token" not in text.lower()


def test_driver_hooks_merge_beside_the_wire_spawn():
    from vimprof.analyzer import analyze_capture

    tl = _timeline()
    spawn = tl["phases"]["spawn"]
    a = spawn["start_ns"] + 20 * MS
    steps = [("create_image", 5), ("generate_xml", 3), ("libvirt_spawn", 200),
             ("wait_boot", 500)]
    hooks = [{"hook": "spawn", "t_ns": a, "end_ns": a + 770 * MS, "instance": SERVER,
              "instance_uuid": SERVER, "variant": "stock", "driver": "libvirt"}]
    t = a
    for name, ms in steps:
        hooks.append({"hook": name, "t_ns": t, "end_ns": t + ms * MS, "instance": SERVER,
                      "variant": "stock"})
        t += ms * MS
    (tl2,) = analyze_capture(CAPTURE, hooks=hooks)
    ph = tl2["phases"]
    assert ph["spawn"] == spawn  # the wire's spawn stays
    assert [ph[n]["ms"] for n, _ in steps] == [5.0, 3.0, 200.0, 500.0]
    assert all(ph[n]["source"] == "hook" for n, _ in steps)
    checks = {c["check"]: c["ok"] for c in tl2["crosscheck"]["checks"]}
    assert checks == {"driver spawn hook starts inside the wire spawn phase": True,
                      "driver spawn hook ends inside the wire spawn phase": True}
    # a driver spawn reported 300 ms after the wire saw the instance active disagrees
    hooks[0]["end_ns"] = spawn["end_ns"] + 300 * MS
    (tl3,) = analyze_capture(CAPTURE, hooks=hooks)
    assert tl3["crosscheck"]["disagreements"] == 1


def test_analyze_run_on_a_nova_campaign_directory(tmp_path):
    """The run directory shape of vimprof/campaigns/nova.py: requests.jsonl with server_id and
    the client's instants, vim-events.jsonl with instance actions (second resolution)."""
    import shutil

    from vimprof import rundir
    from vimprof.analyzer import analyze_run

    tl = _timeline()
    ph = tl["phases"]
    run = rundir.RunDir(tmp_path / "nova")
    run.path.mkdir()
    shutil.copy(CAPTURE, run.file(rundir.CAPTURE))
    sec = 1_000_000_000
    with run.writer(rundir.REQUESTS) as w:
        w.write({"vim": "nova", "run": 4, "server_id": SERVER, "ok": True,
                 "t_registered_ns": ph["api"]["end_ns"] + 2 * MS,
                 "t_running_ns": ph["total"]["end_ns"] + 1 * MS})
        w.write({"vim": "nova", "run": 5, "server_id": "not-in-this-capture", "ok": True})
    start = ph["compute"]["start_ns"] // sec * sec
    with run.writer(rundir.VIM_EVENTS) as w:
        w.write({"source": "vim", "subject": SERVER, "server_id": SERVER, "kind": "action",
                 "name": "create", "t_ns": ph["api"]["start_ns"] // sec * sec})
        w.write({"source": "vim", "subject": SERVER, "server_id": SERVER, "kind": "event",
                 "name": "compute__do_build_and_run_instance", "t_ns": start,
                 "end_ns": ph["compute"]["end_ns"] // sec * sec, "result": "Success"})
    result = analyze_run(run)
    assert result.counts["timelines"] == 1 and result.counts["crosscheck_disagreements"] == 0
    (out,) = run.read(rundir.TIMELINES)
    assert out["instance"] == SERVER and out["run"] == 4 and out["complete"]
    names = {c["check"] for c in out["crosscheck"]["checks"]}
    assert names == {
        "instance action event start vs compute start",
        "instance action event finish vs compute end",
        "client saw the 202 when nova-api sent it",
        "client saw ACTIVE after compute set vm_state active",
    }
    assert result.summary().startswith("1 timelines (0 incomplete) from 633 packets")
    assert "138 AMQP messages" in result.summary()
