"""A capture that another process is still writing, read as if it were complete: the live
source (`vimprof analyze --follow`, `vimprof capture --live`; analyzer/follow.py).

tcpdump -U writes whole packets as they come (vimprof/capture.py); FollowFile hands out the
bytes as they appear and blocks in short sleeps for more until the writer is done, so a
capture reader (sources/pcap.py) reads the growing file as a plain one.

Analyzer stage 1, sources (vimprof/analyzer/__init__.py).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

POLL_S = 0.05  # sleep between two looks at a file that has not grown


class FollowFile(io.RawIOBase):
    """A file another process appends to, read as if it were complete.

    `read(n)` returns n bytes, blocking (sleeps of `poll_s` s) until they exist, or fewer
    (possibly b"") once `done()` is true and the file is read to its end. `read1(n)`
    returns as soon as at least one byte is there. The file may not exist yet: it is
    waited for (until `done()`). `stopped` (a threading.Event) ends all waiting at once.
    `bytes_read`: bytes handed out so far. OSError other than a missing file propagate.
    """

    def __init__(
        self,
        path: str | Path,
        done: Callable[[], bool],
        poll_s: float = POLL_S,
        stopped: threading.Event | None = None,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.done = done
        self.poll_s = poll_s
        self.stopped = stopped or threading.Event()
        self._fh: io.BufferedReader | None = None
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def _open(self) -> bool:
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")  # noqa: SIM115 - closed in close()
            except FileNotFoundError:
                return False
        return True

    def _wait(self, final: list[bool]) -> bool:
        """Whether to look again: False once the writer was done before the last look."""
        if final[0] or self.stopped.is_set():
            return False
        if self.done():
            final[0] = True  # one more look: bytes written just before it finished
            return True
        self.stopped.wait(self.poll_s)
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self.readall()
        return self._read(n, whole=True)

    def read1(self, n: int = -1) -> bytes:
        return self._read(n if n is not None and n >= 0 else 1 << 16, whole=False)

    def readall(self) -> bytes:
        parts = []
        while chunk := self._read(1 << 20, whole=True):
            parts.append(chunk)
        return b"".join(parts)

    def readinto(self, b: Any) -> int:
        data = self._read(len(b), whole=False)
        b[: len(data)] = data
        return len(data)

    def _read(self, n: int, whole: bool) -> bytes:
        out = bytearray()
        final = [False]
        while len(out) < n:
            if self._open():
                chunk = self._fh.read(n - len(out))  # type: ignore[union-attr]
                if chunk:
                    out += chunk
                    if not whole:
                        break
                    continue
            if not self._wait(final):
                break
        self.bytes_read += len(out)
        return bytes(out)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        super().close()
