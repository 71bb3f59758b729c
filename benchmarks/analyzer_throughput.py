"""Analyzer throughput benchmark: vimprof's analyzer vs a Scapy dissection vs tshark.

Builds a large capture (default >= 1,000,000 packets) by replaying the real lab capture
tests/data/nomad-lab-3runs/capture.pcap (Nomad v1.11.3, two-host lab, Linux SLL2) over and
over: each replay is shifted in time (after the previous one) and gets its own client ports
(so its TCP connections are new ones) and its own allocation / job ids (same length, so
HTTP Content-Length and msgpack lengths stay valid), i.e. a long campaign of many instances.
The capture is written under /tmp (never the repository).

Then measures, each in its own child process (peak RSS from os.wait4's rusage of that
child, wall time around it):
- vimprof: `analyze(path, on_timeline=...)` (pcap reading, TCP reassembly, HTTP, yamux,
  msgpack-rpc, timelines streamed out as analyze_run does), all packets;
- Scapy: full dissection (`PcapReader`, every packet's layers, the TCP payload accessed), on
  the first `--scapy-packets` packets (Scapy is slow), reported as packets/s;
- tshark: `tshark -r FILE -Y "tcp.port==4646 || tcp.port==4647" -T fields -e ...`, all
  packets, output discarded.
Prints packets/s and peak RSS of each and the ratios; with --json, one JSON object too.
Targets (issue 3): vimprof >= 20x Scapy, >= tshark's packets/s, peak RSS < 300 MB and flat
in capture size (compare --packets 250000 with 1000000).

Usage: python3 benchmarks/analyzer_throughput.py [--packets N] [--scapy-packets N]
       [--out /tmp/vimprof-bench] [--keep] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "tests" / "data" / "nomad-lab-3runs" / "capture.pcap"
SERVER_PORTS = (4646, 4647)
LINK_HEADER = {1: 14, 113: 16, 276: 20, 101: 0, 228: 0, 229: 0}


def _records(path: Path) -> tuple[int, list[tuple[int, bytes, int]]]:
    sys.path.insert(0, str(REPO))
    from vimprof.analyzer.sources.pcap import PcapReader

    with PcapReader(path) as r:
        recs = [(rec.t_ns, rec.data, rec.origlen) for rec in r.records_iter()]
        (lt,) = r.linktypes
    return lt, recs


def _ids(recs: list[tuple[int, bytes, int]]) -> list[bytes]:
    """Allocation ids and the campaign id of the lab capture (replaced per replay)."""
    ids = [
        b"b8615eca",
        b"88f826ab",
        b"5463f55c",
        b"88c765",  # campaign id, in the job ids vimprof-lab3-88c765-000N
    ]
    assert all(any(i in d for _t, d, _o in recs) for i in ids)
    return ids


def build(out: Path, packets: int) -> tuple[Path, int]:
    """Write the replayed capture (nanosecond pcap); returns (path, packets written)."""
    lt, recs = _records(LAB)
    link = LINK_HEADER[lt]
    ids = _ids(recs)
    span = recs[-1][0] - recs[0][0] + 50_000_000
    reps = -(-packets // len(recs))
    path = out / "large.pcap"
    # pre-split each record around its TCP ports for fast rewriting
    pieces = []
    for t, data, orig in recs:
        ihl = (data[link] & 0x0F) * 4 if data[link] >> 4 == 4 else 40
        p = link + ihl
        sport, dport = struct.unpack_from("!HH", data, p)
        pieces.append((t - recs[0][0], data, orig, p, sport, dport))
    n = 0
    with open(path, "wb", buffering=1 << 22) as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, lt))
        base = recs[0][0]
        for k in range(reps):
            tag = b"%08x" % (k & 0xFFFFFFFF)
            for dt, data, orig, p, sport, dport in pieces:
                if n >= packets:
                    break
                buf = bytearray(data)
                for i in ids:
                    j = buf.find(i)
                    while j >= 0:
                        buf[j : j + len(i)] = tag[-len(i):]
                        j = buf.find(i, j + len(i))
                ps = [sport, dport]
                for x in (0, 1):
                    if ps[x] not in SERVER_PORTS:
                        ps[x] = 10000 + (ps[x] + k * 17) % 50000
                        if ps[x] in SERVER_PORTS:
                            ps[x] += 2
                struct.pack_into("!HH", buf, p, ps[0], ps[1])
                t = base + k * span + dt
                sec, ns = divmod(t, 1_000_000_000)
                fh.write(struct.pack("<IIII", sec, ns, len(buf), orig))
                fh.write(buf)
                n += 1
    return path, n


VIMPROF = """
import sys, time
sys.path.insert(0, {repo!r})
from vimprof.analyzer.pipeline import analyze
n = [0, 0]
def sink(tl):  # streaming, as analyze_run: each timeline handed on, none kept
    n[0] += 1
    n[1] += bool(tl["complete"])
t, c = time.perf_counter(), time.process_time()
_tls, d, _w = analyze({path!r}, on_timeline=sink)
print(d.counts["packets"], n[0], n[1], time.perf_counter() - t, time.process_time() - c)
"""

SCAPY = """
import time
from scapy.all import PcapReader
from scapy.layers.inet import IP, TCP
n = 0
t, c = time.perf_counter(), time.process_time()
with PcapReader({path!r}) as r:
    for pkt in r:
        pkt.layers()
        if TCP in pkt:
            pkt[IP].src, pkt[TCP].sport, pkt[TCP].dport
            bytes(pkt[TCP].payload)
        n += 1
        if n >= {limit}:
            break
print(n, 0, 0, time.perf_counter() - t, time.process_time() - c)
"""


def _child(argv: list[str], stdout=subprocess.PIPE) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds, peak RSS bytes of that child, its stdout)."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE)
    out = b""
    if stdout == subprocess.PIPE:
        out = p.stdout.read()
    err = p.stderr.read()
    _pid, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[0]} failed: {err.decode(errors='replace')[-2000:]}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss * 1024, out.decode()


def measure(path: Path, packets: int, scapy_packets: int) -> dict:
    """Run the three tools; packets/s on CPU time (the machine may be shared: wall time is
    reported too but CPU time is the fair measure); analysis-only times exclude imports."""
    res: dict = {"packets": packets, "capture_bytes": path.stat().st_size}
    wall, cpu, rss, out = _child(
        [sys.executable, "-c", VIMPROF.format(repo=str(REPO), path=str(path))]
    )
    n, tls, complete, inner, inner_cpu = out.split()
    res["vimprof"] = {
        "packets": int(n), "seconds": wall, "cpu_seconds": cpu,
        "loop_seconds": float(inner), "loop_cpu_seconds": float(inner_cpu),
        "pps": int(n) / float(inner_cpu), "pps_wall": int(n) / float(inner),
        "peak_rss_mb": rss / 2**20, "timelines": int(tls), "complete_timelines": int(complete),
    }
    wall, cpu, rss, out = _child(
        [sys.executable, "-c", SCAPY.format(path=str(path), limit=scapy_packets)]
    )
    n, _a, _b, inner, inner_cpu = out.split()
    res["scapy"] = {
        "packets": int(n), "seconds": wall, "cpu_seconds": cpu,
        "loop_seconds": float(inner), "loop_cpu_seconds": float(inner_cpu),
        "pps": int(n) / float(inner_cpu), "pps_wall": int(n) / float(inner),
        "peak_rss_mb": rss / 2**20,
        "note": f"first {n} packets (full dissection), loop time only",
    }
    tshark = shutil.which("tshark")
    if tshark:
        with open(os.devnull, "wb") as null:
            wall, cpu, rss, _ = _child(
                [tshark, "-n", "-r", str(path), "-Y", "tcp.port==4646 || tcp.port==4647",
                 "-T", "fields", "-e", "frame.time_epoch", "-e", "ip.src", "-e", "tcp.srcport",
                 "-e", "tcp.dstport", "-e", "tcp.len"],
                stdout=null,
            )
        res["tshark"] = {"packets": packets, "seconds": wall, "cpu_seconds": cpu,
                         "loop_seconds": wall, "loop_cpu_seconds": cpu,
                         "pps": packets / cpu, "pps_wall": packets / wall,
                         "peak_rss_mb": rss / 2**20, "note": "whole process (start-up included)"}
    v = res["vimprof"]["pps"]
    res["ratio_vs_scapy"] = v / res["scapy"]["pps"]
    if "tshark" in res:
        res["ratio_vs_tshark"] = v / res["tshark"]["pps"]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--scapy-packets", type=int, default=50_000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/vimprof-bench"))
    ap.add_argument("--keep", action="store_true", help="keep the built capture")
    ap.add_argument("--json", action="store_true", help="also print one JSON line")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    path, n = build(a.out, a.packets)
    print(f"built {path}: {n} packets, {path.stat().st_size / 2**20:.0f} MiB "
          f"in {time.perf_counter() - t:.1f} s (replays of {LAB.name})")
    try:
        res = measure(path, n, a.scapy_packets)
    finally:
        if not a.keep:
            path.unlink(missing_ok=True)
    print(f"{'tool':8} {'packets':>9} {'CPU s':>8} {'wall s':>8} {'packets/s':>11} "
          f"{'(wall)':>9} {'peak RSS MB':>12}")
    for name in ("vimprof", "scapy", "tshark"):
        r = res.get(name)
        if r:
            print(f"{name:8} {r['packets']:>9} {r['loop_cpu_seconds']:>8.2f} "
                  f"{r['loop_seconds']:>8.2f} {r['pps']:>11.0f} {r['pps_wall']:>9.0f} "
                  f"{r['peak_rss_mb']:>12.1f}")
    print("packets/s = packets / CPU seconds of the analysis loop (tshark: whole process)")
    v = res["vimprof"]
    print(f"vimprof timelines: {v['timelines']} ({v['complete_timelines']} complete)")
    print(f"ratio vimprof/scapy: {res['ratio_vs_scapy']:.1f}x (target >= 20x)")
    if "ratio_vs_tshark" in res:
        print(f"ratio vimprof/tshark: {res['ratio_vs_tshark']:.2f}x (target >= 1x)")
    print(f"vimprof peak RSS: {v['peak_rss_mb']:.0f} MB (target < 300 MB)")
    if a.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
