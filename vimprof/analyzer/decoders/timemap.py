"""Byte offset -> capture time map for one reassembled byte stream.

Decoders append each chunk they receive with the capture time (ns since epoch) of the packet
that carried it, then ask which packet carried a given byte of the stream: the first byte of
a message gives its t_first_ns, the last byte its t_last_ns.

Analyzer stage 3, decoders (vimprof/analyzer/__init__.py): used by the protocol decoders to
time their messages.
"""

from __future__ import annotations

from bisect import bisect_right


class TimeMap:
    """Capture times of the chunks of one stream, by absolute stream offset (from 0)."""

    __slots__ = ("_starts", "_times", "end")

    def __init__(self, start: int = 0):
        self._starts: list[int] = []
        self._times: list[int] = []
        self.end = start  # absolute offset just past the last byte added

    def add(self, t_ns: int, n: int) -> None:
        """Record that the next `n` bytes of the stream arrived at `t_ns`."""
        if n <= 0:
            return
        if self._times and self._times[-1] == t_ns and self._starts:
            self.end += n  # same packet time: extend the previous chunk
            return
        self._starts.append(self.end)
        self._times.append(t_ns)
        self.end += n

    def skip(self, n: int) -> None:
        """Advance the end by `n` bytes that were never seen (a gap): they have no time."""
        self.end += n

    def time_at(self, offset: int) -> int:
        """Time of the chunk holding byte `offset` (the nearest earlier chunk; 0 if none)."""
        i = bisect_right(self._starts, offset) - 1
        if i < 0:
            return self._times[0] if self._times else 0
        return self._times[i]

    def pieces(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """(t_ns, from, to) for the chunks covering bytes [start, end), in order."""
        out: list[tuple[int, int, int]] = []
        i = max(bisect_right(self._starts, start) - 1, 0)
        n = len(self._starts)
        pos = start
        while pos < end and i < n:
            nxt = self._starts[i + 1] if i + 1 < n else self.end
            hi = min(nxt, end)
            if hi > pos:
                out.append((self._times[i], pos, hi))
                pos = hi
            i += 1
        return out

    def trim(self, offset: int) -> None:
        """Forget chunks that end at or before `offset` (bytes no longer needed)."""
        i = bisect_right(self._starts, offset) - 1
        if i > 32:
            del self._starts[:i]
            del self._times[:i]
