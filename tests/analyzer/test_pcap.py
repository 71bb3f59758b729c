from __future__ import annotations

import pytest

from vimprof.analyzer.sources.pcap import PcapReader
from vimprof.errors import VimprofError

from . import wire

T0 = 1_700_000_000_123_456_789


def _seg(payload: bytes = b"hello", sport: int = 40000, dport: int = 4646) -> bytes:
    return wire.ipv4("10.0.0.1", "10.0.0.2", wire.tcp(sport, dport, 77, 88, payload=payload))


def _read(tmp_path, data: bytes, name: str = "x.pcap"):
    p = tmp_path / name
    p.write_bytes(data)
    with PcapReader(p) as r:
        pkts = list(r)
    return r, pkts


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_classic_pcap_both_magics_and_byte_orders(tmp_path, endian, nano):
    recs = [(T0, wire.eth(_seg(b"abc"))), (T0 + 5_000, wire.eth(_seg(b"defg")))]
    r, pkts = _read(tmp_path, wire.pcap(recs, nano=nano, endian=endian))
    assert r.format == "pcap" and not r.truncated
    assert [p.payload for p in pkts] == [b"abc", b"defg"]
    want = T0 if nano else T0 // 1000 * 1000
    assert pkts[0].t_ns == want
    p = pkts[0]
    assert (p.src, p.sport, p.dst, p.dport, p.seq, p.ack) == (
        "10.0.0.1",
        40000,
        "10.0.0.2",
        4646,
        77,
        88,
    )


@pytest.mark.parametrize("tsresol,exact", [(None, False), (9, True)])
@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_resolutions(tmp_path, tsresol, exact, endian):
    recs = [(T0, wire.eth(_seg(b"x" * 3))), (T0 + 1_000_000, wire.eth(_seg(b"y")))]
    r, pkts = _read(tmp_path, wire.pcapng(recs, tsresol=tsresol, endian=endian), "x.pcapng")
    assert r.format == "pcapng"
    assert [p.payload for p in pkts] == [b"xxx", b"y"]
    assert pkts[0].t_ns == (T0 if exact else T0 // 1000 * 1000)
    assert pkts[1].t_ns - pkts[0].t_ns == 1_000_000


def test_pcapng_binary_resolution_and_spb(tmp_path):
    recs = [(2_000_000_000, wire.eth(_seg(b"a")))]
    _, pkts = _read(tmp_path, wire.pcapng(recs, tsresol=0x80 | 10))  # 2^-10 s units
    assert abs(pkts[0].t_ns - 2_000_000_000) < 1_000_000
    _, pkts = _read(tmp_path, wire.pcapng(recs, spb=True), "spb.pcapng")
    assert [p.payload for p in pkts] == [b"a"]


def test_link_types_vlan_sll_sll2_raw_ipv6(tmp_path):
    v6 = wire.ipv6("fd00::1", "fd00::2", wire.tcp(1234, 4647, 1, 0, payload=b"six"))
    cases = [
        (1, wire.eth(_seg(b"vlan"), vlans=(100, 200))),
        (113, wire.sll(_seg(b"sll"))),
        (276, wire.sll2(_seg(b"sll2"))),
        (101, _seg(b"raw")),
        (228, _seg(b"ipv4")),
        (229, v6),
        (276, wire.sll2(v6)),
    ]
    for i, (lt, frame) in enumerate(cases):
        _, pkts = _read(tmp_path, wire.pcap([(T0, frame)], linktype=lt), f"{i}.pcap")
        assert len(pkts) == 1, lt
        assert pkts[0].payload in (b"vlan", b"sll", b"sll2", b"raw", b"ipv4", b"six")
    assert pkts[0].src == "fd00::1" and pkts[0].dport == 4647


def test_ethernet_padding_is_not_payload(tmp_path):
    _, pkts = _read(tmp_path, wire.pcap([(T0, wire.eth(_seg(b""), pad_to=60))]))
    assert pkts[0].payload == b""


def test_non_tcp_and_fragments_are_skipped(tmp_path):
    udp = wire.ipv4("10.0.0.1", "10.0.0.2", b"\x00" * 8, proto=17)
    frag = wire.ipv4("10.0.0.1", "10.0.0.2", wire.tcp(1, 2, 3, payload=b"z"), frag=0x2000)
    r, pkts = _read(
        tmp_path, wire.pcap([(T0, wire.eth(udp)), (T0, wire.eth(frag)), (T0, wire.eth(_seg()))])
    )
    assert len(pkts) == 1 and r.skipped == 2 and r.records == 3


def test_snaplen_cut_packets_are_marked(tmp_path):
    frame = wire.eth(_seg(b"0123456789"))
    cut = frame[:-4]
    r, pkts = _read(tmp_path, wire.pcap([(T0, cut)], origlens={0: len(frame)}))
    assert pkts[0].snapped and pkts[0].payload == b"012345" and pkts[0].wire_len == 10
    assert r.snapped == 1


def test_truncated_file_stops_cleanly(tmp_path):
    data = wire.pcap([(T0, wire.eth(_seg(b"a"))), (T0 + 1, wire.eth(_seg(b"bbbb")))])
    r, pkts = _read(tmp_path, data[:-3])
    assert r.truncated and len(pkts) == 1
    assert any("truncated" in w for w in r.warnings)
    ng = wire.pcapng([(T0, wire.eth(_seg(b"a"))), (T0 + 1, wire.eth(_seg(b"bbbb")))])
    r, pkts = _read(tmp_path, ng[:-6], "t.pcapng")
    assert r.truncated and len(pkts) == 1


def test_not_a_capture(tmp_path):
    for i, data in enumerate([b"", b"GET / HTTP/1.1\r\n\r\n", b"\x00" * 100]):
        p = tmp_path / f"n{i}"
        p.write_bytes(data)
        with pytest.raises(VimprofError, match="not a pcap/pcapng capture"):
            PcapReader(p)


def test_missing_file_and_unknown_linktype(tmp_path):
    with pytest.raises(VimprofError, match="cannot open"):
        PcapReader(tmp_path / "absent.pcap")
    p = tmp_path / "lt.pcap"
    p.write_bytes(wire.pcap([(T0, b"\x00" * 40)], linktype=147))
    with pytest.raises(VimprofError, match="link type 147"), PcapReader(p) as r:
        list(r)


@pytest.mark.parametrize("name", ["nomad-dev-mock.pcap", "nomad-lab-3runs/capture.pcap"])
def test_fast_pcap_path_equals_the_generic_decoder(name, tmp_path):
    from pathlib import Path

    from vimprof.analyzer.sources.pcap import decode_record

    src = Path(__file__).resolve().parents[1] / "data" / name
    with PcapReader(src) as r:
        fast = list(r)
    with PcapReader(src) as r:
        generic = [p for p in map(decode_record, r.records_iter()) if p is not None]
    assert fast == generic and len(fast) > 300
    # and on odd records the fast path hands over: VLAN, IPv6, options, snapped, non-TCP
    recs = [
        (T0, wire.eth(_seg(b"vlan"), vlans=(5,))),
        (T0 + 1, wire.eth(wire.ipv6("fd00::1", "fd00::2", wire.tcp(40000, 4647, 1, 0,
                                                                   payload=b"v6")))),
        (T0 + 2, wire.eth(_seg(b"x" * 30))),
        (T0 + 3, wire.eth(wire.ipv4("10.0.0.1", "10.0.0.2", b"\x00" * 8, proto=17))),
        (T0 + 4, wire.eth(_seg(b"plain"), pad_to=80)),
    ]
    p = tmp_path / "odd.pcap"
    p.write_bytes(wire.pcap(recs, origlens={2: 200}))
    with PcapReader(p) as r:
        fast = list(r)
        assert r.skipped == 1 and r.snapped == 1
    with PcapReader(p) as r:
        generic = [x for x in map(decode_record, r.records_iter()) if x is not None]
    assert fast == generic
    assert [x.payload for x in fast] == [b"vlan", b"v6", b"x" * 30, b"plain"]
