"""Captures merged by time: several pcap/pcapng files (each with its clock offset) read as one
stream of TCP segments in corrected time order, and the command line's FILE[@OFFSET_MS].

Analyzer stage 1, sources (vimprof/analyzer/__init__.py), with sources/pcap.py (one file)
and sources/growing.py (a capture still being written): `Packet`s out, in time order, to
tcp.py.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from pathlib import Path

from vimprof.analyzer.sources.pcap import Packet, PcapReader
from vimprof.errors import VimprofError

CaptureSource = str | Path | tuple[str | Path, int]


def parse_capture_arg(arg: str) -> tuple[Path, int]:
    """"FILE" or "FILE@OFFSET_MS" (a command-line capture argument) -> (path, offset ns).

    Raises VimprofError when the offset is not a number.
    """
    path, sep, off = arg.rpartition("@")
    if not sep or Path(arg).exists():
        return Path(arg), 0
    try:
        return Path(path), int(round(float(off) * 1e6))
    except ValueError as e:
        raise VimprofError(
            f"bad capture argument {arg!r}: expected FILE or FILE@OFFSET_MS (e.g. b.pcap@-3.5)"
        ) from e


def _source(src: CaptureSource) -> tuple[Path, int]:
    if isinstance(src, tuple):
        path, offset = src
        return Path(path), int(offset)
    return Path(src), 0


class MergedReader:
    """TCP segments of several captures merged by (corrected) capture time.

    `sources`: paths, or (path, offset_ns) pairs; `offset_ns` is added to every timestamp of
    that file (a capture host whose clock is behind by 3 ms gets +3_000_000), so captures
    from two hosts line up. Each file must be in time order itself (tcpdump writes it so).
    A packet seen by two capture points appears twice; TCP reassembly drops the copy as a
    retransmission. With one source this is a PcapReader (its errors raise as there). With
    several, a file that cannot be read (missing, not a capture, unknown link type) becomes
    a warning and the others are still read; VimprofError only if none can be read.
    Counters as PcapReader (summed): records, packets, skipped, snapped; `truncated` if any
    file is; `warnings`; `sources` the (path, offset_ns) pairs used.
    """

    def __init__(self, sources: Iterable[CaptureSource]):
        self.sources = [_source(s) for s in sources]
        if not self.sources:
            raise VimprofError("no capture given; pass at least one pcap/pcapng file")
        self.readers: list[tuple[PcapReader, int]] = []
        self._warnings: list[str] = []
        errors: list[str] = []
        for path, offset in self.sources:
            try:
                self.readers.append((PcapReader(path), offset))
            except VimprofError as e:
                if len(self.sources) == 1:
                    raise
                errors.append(str(e))
                self._warnings.append(f"{e} (file skipped; the other captures are used)")
        if not self.readers:
            raise VimprofError("no capture could be read: " + "; ".join(errors))

    def __enter__(self) -> MergedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for r, _ in self.readers:
            r.close()

    def _one(self, reader: PcapReader, offset: int) -> Iterator[Packet]:
        try:
            if offset:
                for pkt in reader:
                    yield pkt._replace(t_ns=pkt.t_ns + offset)
            else:
                yield from reader
        except VimprofError as e:
            if len(self.readers) == 1:
                raise
            self._warnings.append(f"{e} (rest of that file skipped)")

    def __iter__(self) -> Iterator[Packet]:
        if len(self.readers) == 1:
            reader, offset = self.readers[0]
            if not offset:
                return iter(reader)  # no wrapper generator: its errors raise as there
            return self._one(reader, offset)
        return heapq.merge(*(self._one(r, o) for r, o in self.readers), key=_t_ns)

    def _sum(self, name: str) -> int:
        return sum(getattr(r, name) for r, _ in self.readers)

    @property
    def records(self) -> int:
        return self._sum("records")

    @property
    def packets(self) -> int:
        return self._sum("packets")

    @property
    def skipped(self) -> int:
        return self._sum("skipped")

    @property
    def snapped(self) -> int:
        return self._sum("snapped")

    @property
    def truncated(self) -> bool:
        return any(r.truncated for r, _ in self.readers)

    @property
    def warnings(self) -> list[str]:
        return self._warnings + [w for r, _ in self.readers for w in r.warnings]


def _t_ns(pkt: Packet) -> int:
    return pkt.t_ns
