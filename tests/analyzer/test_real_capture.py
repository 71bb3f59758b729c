"""The analyzer on a real capture: Nomad v1.11.3 `agent -dev` in a network namespace, tcpdump
on lo (Ethernet, microsecond pcap) started before the agent; three jobs registered with
`curl -X PUT /v1/jobs` (mockA: mock_driver, mockB: mock_driver count 2, rawC: raw_exec), each
waited for running, then all deleted with ?purge=true. The register requests carried a fake
`X-Nomad-Token: TOPSECRET-TOKEN`. Facts below were read from the Nomad API during that run.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from vimprof.analyzer import analyze_capture
from vimprof.analyzer.decoders.nomad_rpc import go_time_ns
from vimprof.analyzer.pipeline import decode_capture
from vimprof.analyzer.sources.pcap import PcapReader

from . import wire

CAPTURE = Path(__file__).resolve().parents[1] / "data" / "nomad-dev-mock.pcap"

# alloc id -> (job, eval id, CreateTime, task "Started" event time, ModifyTime) from the API
ALLOCS = {
    "1c061907-9368-1724-149e-9c0356bd9d5e": (
        "mockA",
        "7f3cea5b-db3a-8a41-61cf-0d53d5782510",
        1795267810189819132,
        1795267810244077640,
        1795267811131563155,
    ),
    "13c6a339-34db-b43d-3b0f-ceb02bb8da99": (
        "mockB",
        "41c8154b-e488-b782-fcba-73f50b01cdc4",
        1795267813203157345,
        1795267813307864620,
        1795267814195112756,
    ),
    "9f002973-37a9-e479-70d0-e012bf989172": (
        "mockB",
        "41c8154b-e488-b782-fcba-73f50b01cdc4",
        1795267813203157345,
        1795267813292799444,
        1795267814195112756,
    ),
    "5b831708-4118-89fd-3104-cd65c640e049": (
        "rawC",
        "28ad6ac9-7c6f-8b0f-3da1-f2e839d45adf",
        1795267816209128418,
        1795267816327458978,
        1795267816507089729,
    ),
}
MS = 1_000_000


@pytest.fixture(scope="module")
def timelines():
    return {t["instance"]: t for t in analyze_capture(CAPTURE)}


def test_every_allocation_has_a_complete_timeline(timelines):
    assert set(timelines) == set(ALLOCS)
    for aid, (job, *_rest) in ALLOCS.items():
        tl = timelines[aid]
        assert tl["job"] == job and tl["vim"] == "nomad" and tl["run"] is None
        assert tl["complete"] and tl["issues"] == [], tl["issues"]
        ph = tl["phases"]
        assert set(ph) == {
            "scheduling", "instantiation", "total",
            "api", "client_pickup", "task_start", "notification", "commit", "stop",
        }
        # the finer phases nest inside the stack phases
        assert ph["api"]["start_ns"] == ph["scheduling"]["start_ns"]
        assert ph["client_pickup"]["start_ns"] == ph["scheduling"]["end_ns"]
        assert ph["notification"]["end_ns"] == ph["total"]["end_ns"]
        assert ph["task_start"]["end_ns"] == ph["notification"]["start_ns"]
        assert 0 < ph["scheduling"]["ms"] < ph["total"]["ms"]
        assert 0 < ph["instantiation"]["ms"] < ph["total"]["ms"]
        assert ph["scheduling"]["start_ns"] == ph["total"]["start_ns"]
        assert ph["instantiation"]["end_ns"] == ph["total"]["end_ns"]
        assert ph["scheduling"]["to"] == "Node.GetClientAllocs response"
        assert ph["total"]["to"] == "Node.UpdateAlloc request"
        assert ph["commit"]["start_ns"] == ph["total"]["end_ns"] < ph["commit"]["end_ns"]


def test_phase_boundaries_agree_with_nomads_own_clocks(timelines):
    for aid, (_job, _ev, create, started, modify) in ALLOCS.items():
        ph = timelines[aid]["phases"]
        # the plan that created the alloc was applied between register and client wake-up
        assert ph["scheduling"]["start_ns"] < create < ph["scheduling"]["end_ns"]
        # the task started between the pull and the running report
        assert ph["instantiation"]["start_ns"] < started < ph["instantiation"]["end_ns"]
        # the server stamps ModifyTime when it receives the report: just after our t_last
        assert 0 <= modify - ph["total"]["end_ns"] < 5 * MS


def test_events_carry_ids_and_the_register_eval(timelines):
    for aid, (job, eval_id, *_r) in ALLOCS.items():
        evs = timelines[aid]["events"]
        by = {}
        for e in evs:
            by.setdefault(e["name"], e)
        assert by["Job.Register response"]["attrs"]["eval_id"] == eval_id
        assert by["Alloc.GetAllocs response"]["attrs"]["eval_id"] == eval_id
        assert by["Job.Deregister request"]["attrs"] == {
            "job": job,
            "via": "http",
            "method": "DELETE",
            "path": f"/v1/job/{job}",
            "purge": True,
        }
        statuses = [
            e["attrs"]["client_status"] for e in evs if e["name"] == "Node.UpdateAlloc request"
        ]
        assert statuses[-2:] == ["running", "complete"]
        assert all(e["host"] == "127.0.0.1" and e["source"] == "capture" for e in evs)
        ts = [e["t_ns"] for e in evs]
        assert ts == sorted(ts)


def test_decoding_is_clean_and_time_blobs_decode():
    d = decode_capture(CAPTURE)
    assert d.warnings == [] and not d.truncated
    assert d.counts["tcp_gaps"] == 0 and d.counts["rpc_lost_messages"] == 0
    methods = {m.method for m in d.rpc}
    assert {
        "Node.Register",
        "Node.GetClientAllocs",
        "Alloc.GetAllocs",
        "Node.UpdateAlloc",
    } <= methods
    assert all(
        m.request is not None
        for m in d.rpc
        if m.direction == "response" and m.method != "Node.GetClientAllocs"
    )  # the last blocking query is unanswered
    started = None
    for m in d.rpc:
        if m.method == "Node.UpdateAlloc" and m.direction == "request":
            for a in m.body["Alloc"]:
                if a["ID"].startswith("1c061907") and a["ClientStatus"] == "running":
                    started = go_time_ns(a["TaskStates"]["t"]["StartedAt"])
    assert started == 1795267810244112973  # API: StartedAt 2026-11-21T13:30:10.244112973Z


def _records():
    with PcapReader(CAPTURE) as r:
        return list(r.records_iter())


def _phases(tls):
    return {
        t["instance"]: {k: (v["start_ns"], v["end_ns"]) for k, v in t["phases"].items()}
        for t in tls
    }


def test_same_timelines_from_pcapng_sll2_nanosecond(tmp_path, timelines):
    recs = [(r.t_ns, wire.sll2(r.data[14:])) for r in _records()]  # strip Ethernet
    p = tmp_path / "c.pcapng"
    p.write_bytes(wire.pcapng(recs, linktype=276, tsresol=9, endian=">"))
    assert _phases(analyze_capture(p)) == _phases(timelines.values())


def test_same_timelines_when_the_capture_starts_mid_connection(tmp_path, timelines):
    recs = _records()
    # start the capture 50 ms before the first register: the client's RPC connection (and its
    # yamux streams) began before it
    first_put = next(i for i, r in enumerate(recs) if b"PUT /v1/jobs" in r.data)
    t0 = recs[first_put].t_ns - 50 * MS
    kept = [(r.t_ns, r.data) for r in recs if r.t_ns >= t0]
    p = tmp_path / "mid.pcap"
    p.write_bytes(wire.pcap(kept, nano=True))
    d = decode_capture(p)
    assert d.counts["rpc_joined_midway"] >= 1
    assert _phases(analyze_capture(p)) == _phases(timelines.values())


def test_a_lost_segment_is_a_gap_not_a_misparse(tmp_path):
    recs = _records()
    # drop the segment that carries the first Node.UpdateAlloc request (running for mockA)
    drop = next(i for i, r in enumerate(recs) if b"Node.UpdateAlloc" in r.data)
    kept = [(r.t_ns, r.data) for i, r in enumerate(recs) if i != drop]
    p = tmp_path / "lost.pcap"
    p.write_bytes(wire.pcap(kept, nano=True))
    d = decode_capture(p)
    assert d.counts["tcp_gaps"] >= 1
    tls = {t["instance"]: t for t in analyze_capture(p)}
    assert set(tls) == set(ALLOCS)
    a = tls["1c061907-9368-1724-149e-9c0356bd9d5e"]
    # its running report was lost: instantiation and total are left out, with the reason
    assert not a["complete"] and "scheduling" in a["phases"]
    assert not {"instantiation", "total", "notification", "commit"} & set(a["phases"])
    assert [i for i in a["issues"] if not i.startswith(("notification", "commit"))] == [
        "instantiation left out: missing event Node.UpdateAlloc request (client_status running)",
        "total left out: missing event Node.UpdateAlloc request (client_status running)",
    ]
    for aid in list(ALLOCS)[1:]:
        assert tls[aid]["complete"]


def test_big_endian_microsecond_pcap_reads_the_same(tmp_path, timelines):
    recs = [(r.t_ns, r.data) for r in _records()]
    p = tmp_path / "be.pcap"
    p.write_bytes(wire.pcap(recs, endian=">"))
    assert struct.unpack(">I", p.read_bytes()[:4])[0] == 0xA1B2C3D4
    assert _phases(analyze_capture(p)) == _phases(timelines.values())
