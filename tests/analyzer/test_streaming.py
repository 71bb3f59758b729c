"""Flat memory: instances are emitted as they finish and their state dropped, with the same
timelines as when everything is kept to the end (nomad_phases / nova_phases "Streaming")."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from vimprof.analyzer.builders.nomad_phases import NomadTimelines, timeline_key
from vimprof.analyzer.builders.nova_phases import NovaTimelines
from vimprof.analyzer.builders.router import MessageRouter
from vimprof.analyzer.decoders.nomad_rpc import BODY_FIELDS
from vimprof.analyzer.decoders.ports import AMQP_PORTS, HTTP_PORTS, NOMAD_RPC_PORTS
from vimprof.analyzer.pipeline import analyze, analyze_run, stream_capture
from vimprof.analyzer.sources.pcap import PcapReader
from vimprof.rundir import CAPTURE, TIMELINES, RunDir

DATA = Path(__file__).parent.parent / "data"
PORTS = frozenset(HTTP_PORTS) | frozenset(NOMAD_RPC_PORTS) | frozenset(AMQP_PORTS)
LINK = {1: 14, 113: 16, 276: 20, 101: 0}
IDS = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                 rb"|(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])"
                 rb"|(?<=vimprof-lab3-)[0-9a-f]{6}")  # the campaign id in the job ids
S = 1_000_000_000


def replay(src: Path, dst: Path, times: int) -> int:
    """Write `src` replayed `times` times one after the other into `dst` (nanosecond pcap):
    each replay shifted in time, with its own client ports and its own uuids (the first six
    hex digits of every uuid and of the campaign id in job ids replaced by the replay
    number, same length: job ids are new in each replay too). Returns the time
    shift between replays (ns)."""
    with PcapReader(src) as r:
        recs = [(x.t_ns, x.data, x.origlen) for x in r.records_iter()]
        (lt,) = r.linktypes
    link = LINK[lt]
    t0 = recs[0][0]
    span = recs[-1][0] - t0 + 50_000_000
    with open(dst, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, lt))
        for k in range(times):
            tag = b"%06x" % k
            for t, data, orig in recs:
                buf = bytearray(IDS.sub(lambda m, tag=tag: tag + m.group(0)[6:], data))
                p = link + ((buf[link] & 0x0F) * 4 if buf[link] >> 4 == 4 else 40)
                ports = list(struct.unpack_from("!HH", buf, p))
                for x in (0, 1):
                    if ports[x] not in PORTS:
                        ports[x] = 10000 + (ports[x] + k * 17) % 50000
                        while ports[x] in PORTS:
                            ports[x] += 2
                struct.pack_into("!HH", buf, p, *ports)
                sec, ns = divmod(t + k * span, S)
                fh.write(struct.pack("<IIII", sec, ns, len(buf), orig))
                fh.write(bytes(buf))
    return span


def _stream(path: Path, keep_all: bool, idle_ns: int | None = None):
    """(timelines sorted, max of each live-state size seen at every emission)."""
    out: list[dict] = []
    peak: dict[str, int] = {}
    b = MessageRouter(lambda tl: out.append(tl), None, **({"idle_ns": idle_ns} if idle_ns else {}))

    def emit(tl: dict) -> None:
        out.append(tl)
        for k, v in b.live().items():
            peak[k] = max(peak.get(k, 0), v)

    b.nomad.emit = b.nova.emit = emit
    if keep_all:  # the analysis as it was: everything held until the end of the capture
        b.nomad = NomadTimelines(emit, sweep=False)
        b.nova = NovaTimelines(emit)
        b.nova.tick = lambda now: None
    stream_capture(path, b.http, b.rpc, b.amqp, rpc_body_fields=BODY_FIELDS)
    b.finish()
    out.sort(key=timeline_key)
    return out, peak, b


def _phases(tl: dict) -> dict[str, float]:
    return {k: v["ms"] for k, v in tl["phases"].items()}


@pytest.fixture(scope="module")
def nomad40(tmp_path_factory) -> tuple[Path, int]:
    p = tmp_path_factory.mktemp("replay") / "nomad40.pcap"
    return p, replay(DATA / "nomad-lab-3runs" / CAPTURE, p, 40)


def test_nomad_many_instances_same_timelines_bounded_state(nomad40):
    path, span = nomad40
    base = analyze(DATA / "nomad-lab-3runs" / CAPTURE)[0]
    assert len(base) == 3 and all(t["complete"] for t in base)
    streamed, peak, b = _stream(path, keep_all=False, idle_ns=20 * S)
    kept, peak_all, _ = _stream(path, keep_all=True)
    assert streamed == kept
    assert len(streamed) == 120 and all(t["complete"] for t in streamed)
    # every replay gives the base capture's timelines, shifted in time (but the task
    # events: their times are the client's, inside the RPC bodies, not shifted)
    by_id = {t["instance"]: t for t in streamed}
    for k in range(40):
        for ref in base:
            tl = by_id[f"{k:06x}" + ref["instance"][6:]]
            assert tl["job"] == ref["job"].replace("88c765", f"{k:06x}")
            wire = [p for p in ref["phases"] if p not in ("task_start", "notification")]
            assert {p: tl["phases"][p]["ms"] for p in wire} == {
                p: ref["phases"][p]["ms"] for p in wire}
            assert [(e["t_ns"] - k * span, e["name"]) for e in tl["events"]
                    if not e["name"].startswith("Task event")] == [
                (e["t_ns"], e["name"]) for e in ref["events"]
                if not e["name"].startswith("Task event")]
    # live state: a few allocations at a time, not 120; jobs and requests bounded by
    # idle_ns (20 s here, ~6 replays of 3.3 s), emitted ids by 10 min
    assert peak["nomad_allocs"] <= 4, peak
    assert peak["nomad_done"] <= 4
    assert peak["nomad_jobs"] <= 25 and peak["nomad_gone"] <= 120
    assert peak["pending_http"] + peak["pending_rpc"] <= 30
    assert peak_all["nomad_allocs"] >= 100  # kept to the end, as before
    assert b.nomad.emitted == 120


def test_nova_many_servers_same_timelines_bounded_state(tmp_path):
    path = tmp_path / "nova12.pcap"
    span = replay(DATA / "nova-lab-boot" / CAPTURE, path, 12)
    (base,) = analyze(DATA / "nova-lab-boot" / CAPTURE)[0]
    streamed, peak, _b = _stream(path, keep_all=False, idle_ns=40 * S)
    kept, _p, _ = _stream(path, keep_all=True)
    assert streamed == kept
    assert len(streamed) == 12 and all(t["complete"] for t in streamed)
    for i, tl in enumerate(streamed):
        assert tl["instance"][6:] == base["instance"][6:]
        assert _phases(tl) == _phases(base)
        assert tl["events"][0]["t_ns"] - i * span == base["events"][0]["t_ns"]
    # 5.3 s per server; emitted settle (10 s) + grace (5 s) after its 404
    assert peak["nova_servers"] <= 5, peak
    assert peak["nova_windows"] <= 10 and peak["nova_request_ids"] <= 25
    assert peak["nova_rpcs"] <= 400 and peak["nova_seen_rpc"] <= 2000


def test_idle_instances_are_emitted():
    """An allocation without news for idle_ns is emitted as it is (mid-capture); messages
    about it after that are ignored and counted, never a second timeline."""
    src = DATA / "nomad-lab-3runs" / CAPTURE
    whole = analyze(src)[0]
    for idle_ns, early in ((300 * S, 1), (S // 5, 3)):
        got: list[dict] = []
        b = MessageRouter(got.append, None, idle_ns=idle_ns)
        stream_capture(src, b.http, b.rpc, b.amqp, rpc_body_fields=BODY_FIELDS)
        before_end = len(got)
        b.finish()
        assert sorted(t["instance"] for t in got) == sorted(t["instance"] for t in whole)
        if idle_ns < S:
            assert before_end >= early and b.nomad.late > 0
            assert not all(t["complete"] for t in got)  # cut short by the idle rule
        else:
            assert before_end == early and got[0] == whole[0]  # finished: purged + 2 s


def test_analyze_run_streams_to_disk_in_order(tmp_path, nomad40):
    path, _span = nomad40
    run = RunDir(tmp_path / "big")
    run.path.mkdir()
    (run.path / CAPTURE).symlink_to(path)
    res = analyze_run(run)
    assert res.counts["timelines"] == 120 and res.counts["incomplete"] == 0
    lines = run.file(TIMELINES).read_text().splitlines()
    assert len(lines) == 120 and res.timelines == [__import__("json").loads(x) for x in lines]
    assert [timeline_key(t) for t in res.timelines] == sorted(timeline_key(t)
                                                              for t in res.timelines)
    assert not list(run.path.glob("*.spool")) and not list(run.path.glob("*.tmp"))
