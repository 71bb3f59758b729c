"""The analyzer's last stage: finished timelines to disk, and what an analysis produced.

TimelineSpool takes each enriched timeline as its instance finishes (streaming: one line
of a temporary file, an index entry in memory), keeps only the campaign's instances
(enrich.belongs), and writes the run's timelines.jsonl at the end, atomically, in
timeline_key order (first event, instance): JSON lines with sorted keys and no spaces.
AnalysisResult is what the pipeline returns: counts, warnings, and the timelines read back
from that file on demand. SpoolError (disk full, permissions) is the user's to act on: the
pipeline lets it through instead of containing it per connection as decoder failures are.

Analyzer stage 6, sink (vimprof/analyzer/__init__.py): enriched timeline dicts in,
timelines.jsonl out.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vimprof.analyzer.builders.nomad_phases import timeline_key
from vimprof.errors import VimprofError


@dataclass
class AnalysisResult:
    """What one analysis produced.

    counts: packets (TCP segments read), records (capture records), connections (on the VIM
    ports), http_messages, rpc_messages, amqp_messages, timelines, incomplete (timelines with
    complete=false), tcp_gaps, snapped (segments cut by the snaplen), encrypted_connections,
    crosscheck_disagreements (failed checks over all timelines); warnings: lines for the
    user; truncated: the capture ends inside a record; timelines: the records written
    (read back from `path` on first access, so that the analysis itself holds none).
    """

    _timelines: list[dict[str, Any]] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False
    path: Path | None = None

    @property
    def timelines(self) -> list[dict[str, Any]]:
        if self._timelines is None:
            self._timelines = (
                [json.loads(line)
                 for line in self.path.read_text(encoding="utf-8").splitlines() if line]
                if self.path is not None and self.path.is_file() else []
            )
        return self._timelines

    def summary(self) -> str:
        """One line for the terminal, e.g. "4 timelines (1 incomplete) from 519 packets, ..."."""
        c = self.counts
        line = (
            f"{c.get('timelines', 0)} timelines ({c.get('incomplete', 0)} incomplete) from "
            f"{c.get('packets', 0)} packets, {c.get('connections', 0)} connections, "
            f"{c.get('http_messages', 0)} HTTP and {c.get('rpc_messages', 0)} RPC messages"
        )
        if c.get("amqp_messages"):
            line += f", {c['amqp_messages']} AMQP messages"
        if c.get("crosscheck_disagreements"):
            line += f"; {c['crosscheck_disagreements']} cross-check disagreement(s)"
        if c.get("foreign_allocations"):
            line += (f"; {c['foreign_allocations']} instance(s) of other campaigns (jobs, "
                     "servers) ignored")
        return line + (" (capture truncated)" if self.truncated else "")


def write_timelines(path: Path, timelines: Iterable[dict[str, Any]]) -> None:
    """Write timelines.jsonl from scratch (atomically: a temp file then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for rec in timelines:
            fh.write(_line(rec))
    os.replace(tmp, path)


def _line(rec: dict[str, Any]) -> str:
    return json.dumps(rec, separators=(",", ":"), sort_keys=True) + "\n"


class SpoolError(VimprofError):
    """Timelines cannot be written (disk full, permissions): not contained per connection."""


class TimelineSpool:
    """Timelines written one by one to a temporary file beside `path`, then to `path` in
    timeline_key order (first event, instance) by `commit()`: memory holds one (key,
    offset, length) per timeline, not the timelines. `filter(tl)` decides what is kept;
    `counts`: timelines, foreign_allocations (filtered out), incomplete,
    crosscheck_disagreements.
    """

    def __init__(self, path: Path, keep: Callable[[dict[str, Any]], bool] | None = None):
        self.path = path
        self.keep = keep
        fd, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".spool", dir=path.parent)
        self._spool = Path(name)
        self._fh = os.fdopen(fd, "wb")
        self._index: list[tuple[int, str, int, int]] = []
        self.counts = {"timelines": 0, "foreign_allocations": 0, "incomplete": 0,
                       "crosscheck_disagreements": 0}

    def add(self, tl: dict[str, Any]) -> None:
        if self.keep is not None and not self.keep(tl):
            self.counts["foreign_allocations"] += 1
            return
        data = _line(tl).encode("utf-8")
        try:
            self._index.append((*timeline_key(tl), self._fh.tell(), len(data)))
            self._fh.write(data)
        except OSError as exc:  # disk full, say: a user error, not a decoder's (see _Guarded)
            raise SpoolError(f"cannot write timelines beside {self.path}: {exc}; free "
                               "space there and run `vimprof analyze` again") from exc
        c = self.counts
        c["timelines"] += 1
        c["incomplete"] += not tl["complete"]
        c["crosscheck_disagreements"] += tl.get("crosscheck", {}).get("disagreements", 0)

    def records(self) -> Iterator[dict[str, Any]]:
        """The kept timelines so far, in the order they were added (reads the spool)."""
        self._fh.flush()
        with open(self._spool, "rb") as fh:
            for _t, _i, off, n in sorted(self._index, key=lambda x: x[2]):
                fh.seek(off)
                yield json.loads(fh.read(n))

    def commit(self) -> None:
        """Write `path` (atomically) in timeline_key order and remove the spool."""
        self._fh.close()
        self._index.sort()
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp",
                                   dir=self.path.parent)
        try:
            with open(self._spool, "rb") as src, os.fdopen(fd, "wb") as out:
                for _t, _i, off, n in self._index:
                    src.seek(off)
                    out.write(src.read(n))
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise SpoolError(f"cannot write {self.path}: {exc}; free space there and run "
                             "`vimprof analyze` again") from exc
        finally:
            self.discard()

    def discard(self) -> None:
        if not self._fh.closed:
            with contextlib.suppress(OSError):  # unflushable on a full disk: dropped anyway
                self._fh.close()
        self._spool.unlink(missing_ok=True)
