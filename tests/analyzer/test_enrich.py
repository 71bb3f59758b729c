"""Hooks, VIM events and cross-checks merged into the real lab capture's timelines, and
several captures merged by time with clock offsets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vimprof import rundir
from vimprof.analyzer import analyze_capture, analyze_run
from vimprof.analyzer.pipeline import decode_capture
from vimprof.analyzer.sources.merge import MergedReader
from vimprof.analyzer.sources.pcap import PcapReader
from vimprof.errors import VimprofError
from vimprof.rundir import RunDir

from . import wire

LAB = Path(__file__).parent.parent / "data" / "nomad-lab-3runs"
A0 = "b8615eca-28ea-f411-450b-f8db593eb5c3"
MS = 1_000_000


def _copy(tmp_path: Path) -> RunDir:
    run = RunDir(tmp_path / "lab3")
    shutil.copytree(LAB, run.path)
    return run


def _write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _events(run: RunDir) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for ev in run.read(rundir.VIM_EVENTS):
        out.setdefault(ev["subject"], {})[ev["name"]] = ev["t_ns"]
    return out


def test_hooks_become_phases_and_floor_probes_are_ignored(tmp_path):
    run = _copy(tmp_path)
    ev = _events(run)[A0]
    setup, started = ev["Task Setup"], ev["Started"]
    common = {"alloc_id": A0, "task": "micro-vnf", "driver": "xen", "variant": "tuned",
              "backend": "qemu", "node": "hostl"}
    hooks = [
        dict(common, hook="init_environment", t_ns=setup + 1 * MS, end_ns=setup + 5 * MS),
        dict(common, hook="spawn", t_ns=setup + 5 * MS, end_ns=started - 1 * MS),
        dict(common, hook="clean", t_ns=started + 500 * MS, end_ns=started + 520 * MS),
        {"probe": "floor", "hook": "spawn", "t_ns": 1, "end_ns": 2, "run": 0},
        dict(common, hook="spawn", alloc_id="not-in-capture", t_ns=1, end_ns=2),
    ]
    _write(run.file(rundir.HOOKS), hooks)
    with open(run.file(rundir.HOOKS), "a") as fh:
        fh.write('{"t_ns": 12, "hook": "sp')  # half-written last line: campaign killed
    result = analyze_run(run)
    tl = next(t for t in result.timelines if t["instance"] == A0)
    ph = tl["phases"]
    assert ph["spawn"] == {
        "start_ns": setup + 5 * MS, "end_ns": started - MS,
        "ms": round((started - MS - setup - 5 * MS) / 1e6, 3),
        "from": "spawn start", "to": "spawn end", "source": "hook",
    }
    assert ph["init_environment"]["ms"] == 4.0 and ph["clean"]["ms"] == 20.0
    hook_events = [e for e in tl["events"] if e["source"] == "hook"]
    assert len(hook_events) == 6
    assert hook_events[0]["attrs"]["variant"] == "tuned" and hook_events[0]["host"] == "hostl"
    # the hooks sit inside the wire's instantiation: cross-checks pass
    assert tl["crosscheck"]["disagreements"] == 0
    assert {"hook spawn after the client pulled the allocation",
            "hook spawn before the server got running"} <= {
        c["check"] for c in tl["crosscheck"]["checks"]}
    assert any("not in the capture" in w for w in result.warnings)
    assert any("hooks.jsonl: 1 line(s)" in w for w in result.warnings)
    # the other allocations got no hook phases
    for t in result.timelines:
        if t["instance"] != A0:
            assert "spawn" not in t["phases"]
    # hooks offset: the client host's clock
    tls = analyze_capture(LAB / "capture.pcap", hooks=hooks[:3], hooks_offset_ns=-2 * MS)
    tl = next(t for t in tls if t["instance"] == A0)
    assert tl["phases"]["spawn"]["start_ns"] == setup + 3 * MS


def test_download_artifact_from_vim_events(tmp_path):
    run = _copy(tmp_path)
    recs = run.read(rundir.VIM_EVENTS)
    setup = next(r for r in recs if r["subject"] == A0 and r["name"] == "Task Setup")
    recs.append(dict(setup, name="Downloading Artifacts", message="Client is downloading",
                     t_ns=setup["t_ns"] + 10 * MS))
    _write(run.file(rundir.VIM_EVENTS), recs)
    result = analyze_run(run)
    tl = next(t for t in result.timelines if t["instance"] == A0)
    started = next(r for r in recs if r["subject"] == A0 and r["name"] == "Started")
    assert tl["phases"]["download_artifact"] == {
        "start_ns": setup["t_ns"] + 10 * MS, "end_ns": started["t_ns"],
        "ms": round((started["t_ns"] - setup["t_ns"] - 10 * MS) / 1e6, 3),
        "from": "Task event Downloading Artifacts", "to": "Task event Started",
        "source": "vim",
    }
    # With the driver's hooks, the download ends where StartTask begins: the phase must not
    # enclose the driver breakdown.
    init = setup["t_ns"] + 30 * MS
    _write(run.file(rundir.HOOKS), [
        {"alloc_id": A0, "task": "micro-vnf", "hook": "init_environment", "t_ns": init,
         "end_ns": init + 2 * MS},
        {"alloc_id": A0, "task": "micro-vnf", "hook": "spawn", "t_ns": init + 2 * MS,
         "end_ns": started["t_ns"] - MS},
    ])
    tl = next(t for t in analyze_run(run).timelines if t["instance"] == A0)
    dl = tl["phases"]["download_artifact"]
    assert (dl["start_ns"], dl["end_ns"], dl["to"], dl["source"]) == (
        setup["t_ns"] + 10 * MS, init, "init_environment start", "vim+hook")
    assert dl["end_ns"] <= tl["phases"]["spawn"]["start_ns"]


def test_crosschecks_pass_on_the_lab_and_flag_a_disagreement(tmp_path):
    run = _copy(tmp_path)
    result = analyze_run(run)
    assert result.counts["crosscheck_disagreements"] == 0
    for tl in result.timelines:
        cc = tl["crosscheck"]
        names = {c["check"] for c in cc["checks"]}
        assert "Task event Started (wire vs API)" in names
        assert "pusher saw running after the server got it" in names
        assert cc["disagreements"] == 0 and tl["issues"] == []
    # move one task event by 300 ms in the VIM's own record: the wire disagrees
    recs = run.read(rundir.VIM_EVENTS)
    for r in recs:
        if r["subject"] == A0 and r["name"] == "Started":
            r["t_ns"] += 300 * MS
    _write(run.file(rundir.VIM_EVENTS), recs)
    result = analyze_run(run)
    tl = next(t for t in result.timelines if t["instance"] == A0)
    bad = [c for c in tl["crosscheck"]["checks"] if not c["ok"]]
    assert [c["check"] for c in bad] == ["Task event Started (wire vs API)"]
    assert bad[0]["diff_ms"] == 300.0
    assert any(i.startswith("crosscheck: Task event Started") for i in tl["issues"])
    assert any(A0 in w and "crosscheck" in w for w in result.warnings)
    assert result.counts["crosscheck_disagreements"] == 1
    # a tolerance wider than the disagreement accepts it
    result = analyze_run(run, tolerance_ms=400)
    assert result.counts["crosscheck_disagreements"] == 0


def _lab_records():
    with PcapReader(LAB / "capture.pcap") as r:
        return r.linktypes, list(r.records_iter())


def _phases(tls):
    return {t["instance"]: {k: (v["start_ns"], v["end_ns"]) for k, v in t["phases"].items()}
            for t in tls}


def test_two_captures_with_a_clock_offset_merge_into_the_same_timelines(tmp_path):
    (lt,), recs = _lab_records()
    ref = _phases(analyze_capture(LAB / "capture.pcap"))
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcapng"
    # host b's clock is 7 ms behind; its file is pcapng with ns timestamps
    a.write_bytes(wire.pcap([(r.t_ns, r.data) for r in recs[0::2]], linktype=lt, nano=True))
    b.write_bytes(wire.pcapng([(r.t_ns - 7 * MS, r.data) for r in recs[1::2]], linktype=lt,
                              tsresol=9))
    assert _phases(analyze_capture([(a, 0), (b, 7 * MS)])) == ref
    # without the offset the order is wrong and the result differs
    assert _phases(analyze_capture([a, b])) != ref
    # both capture points saw every packet: duplicates are dropped as retransmissions
    full = tmp_path / "full.pcap"
    shutil.copy(LAB / "capture.pcap", full)
    d = decode_capture([LAB / "capture.pcap", (full, 0)])
    assert d.counts["packets"] == 2 * len(recs) and d.counts["tcp_gaps"] == 0
    assert _phases(analyze_capture([LAB / "capture.pcap", full])) == ref


def test_an_unreadable_capture_among_several_is_a_warning(tmp_path):
    bad_lt = tmp_path / "lt.pcap"
    bad_lt.write_bytes(wire.pcap([(1, b"\x00" * 40)], linktype=147))
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture at all")
    d = decode_capture([LAB / "capture.pcap", bad_lt, junk])
    assert d.counts["http_messages"] == 48
    assert any("link type 147" in w for w in d.warnings)
    assert any("not a pcap/pcapng capture" in w for w in d.warnings)
    with pytest.raises(VimprofError, match="no capture could be read"):
        MergedReader([bad_lt.with_name("absent"), junk])
    with pytest.raises(VimprofError, match="link type 147"):
        decode_capture(bad_lt)  # one file: the error itself


def test_pcapng_interface_with_unknown_link_type_is_skipped(tmp_path):
    (lt,), recs = _lab_records()
    ng = wire.pcapng([(r.t_ns, r.data) for r in recs], linktype=lt, tsresol=9)
    # add a second IDB (link type 147) and one packet on it, after the first IDB
    idb = wire._block("<", 1, b"\x93\x00\x00\x00\x00\x00\x00\x00" + b"\x00" * 4)
    epb = wire._block("<", 6, (1).to_bytes(4, "little") + b"\x00" * 8 + (4).to_bytes(4, "little")
                      * 2 + b"abcd")
    shb_len = int.from_bytes(ng[4:8], "little")
    idb1_len = int.from_bytes(ng[shb_len + 4: shb_len + 8], "little")
    cut = shb_len + idb1_len
    p = tmp_path / "mixed.pcapng"
    p.write_bytes(ng[:cut] + idb + epb + ng[cut:])
    d = decode_capture(p)
    assert d.counts["http_messages"] == 48 and d.counts["skipped_records"] == 1
    assert any("interface 1 uses link type 147" in w for w in d.warnings)


def test_no_vim_traffic_and_tls_are_clear_messages(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    f = wire.Flow(client=("10.0.0.9", 50000), server=("10.0.0.2", 22))
    f.handshake()
    f.send(0, b"SSH-2.0-OpenSSH\r\n")
    run.file(rundir.CAPTURE).write_bytes(wire.pcap(f.eth_records()))
    result = analyze_run(run)
    assert result.timelines == []
    assert any("no VIM traffic" in w for w in result.warnings)
    f = wire.Flow(client=("10.0.0.9", 50000), server=("10.0.0.2", 4646))
    f.handshake()
    f.send(0, b"\x16\x03\x01\x00\x30" + b"GET /v1/jobs HTTP/1.1\r\n\r\n" + b"\x00" * 20)
    f.send(1, b"\x16\x03\x03\x00\x30" + b"\x00" * 48)
    run.file(rundir.CAPTURE).write_bytes(wire.pcap(f.eth_records()))
    result = analyze_run(run)
    assert result.counts["http_messages"] == 0 and result.counts["encrypted_connections"] == 1
    assert any("encrypted: cannot decode, use hooks or VIM events" in w
               for w in result.warnings)
