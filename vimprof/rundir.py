"""The run directory: the unit of data every stage reads and writes (ARCHITECTURE.md).

    runs/<label>/
      manifest.json      vimprof version, campaign, VIM versions, hosts, start/end
      requests.jsonl     one line per instantiation request (client-side times, outcome)
      capture.pcap       traffic seen at the capture point
      hooks.jsonl        driver timestamp hooks, floor probes
      vim-events.jsonl   the VIM's own events (Nomad allocation/task events, Nova actions)
      timelines.jsonl    analyzer output, one record per instance

manifest.json's "schema" ("vimprof-run/1") versions the whole directory; the shapes are the
JSON Schemas of vimprof/schemas/ (vimprof/schema.py, docs/run-directory.md).

JSON lines are append-only and flushed per record, so a campaign killed halfway leaves a
readable directory. Instants are integer ns since the Unix epoch (UTC); durations are ms.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from vimprof.errors import VimprofError

MANIFEST = "manifest.json"
REQUESTS = "requests.jsonl"
CAPTURE = "capture.pcap"
VIM_EVENTS = "vim-events.jsonl"
HOOKS = "hooks.jsonl"
TIMELINES = "timelines.jsonl"

# The run directory's schema version, written to manifest.json as "schema" by every campaign
# and importer (vimprof/schema.py, docs/run-directory.md). JSON-lines records carry none.
SCHEMA_VERSION = "vimprof-run/1"

DEFAULT_RUNS_ROOT = Path("runs")


def now_ns() -> int:
    """Wall-clock instant in ns since the Unix epoch (the unit of every `*_ns` field)."""
    return time.time_ns()


class JsonlWriter:
    """Append-only JSON-lines file, flushed after every record."""

    def __init__(self, path: Path):
        self.path = path
        self._fh: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines file; a torn last line (campaign killed mid-write) is skipped."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


@dataclass(frozen=True)
class RunDir:
    """One run directory on disk."""

    path: Path

    @property
    def label(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    def writer(self, name: str) -> JsonlWriter:
        return JsonlWriter(self.file(name))

    def read(self, name: str) -> list[dict[str, Any]]:
        p = self.file(name)
        return list(read_jsonl(p)) if p.exists() else []

    def manifest(self) -> dict[str, Any]:
        p = self.file(MANIFEST)
        return json.loads(p.read_text()) if p.exists() else {}

    def update_manifest(self, **fields: Any) -> None:
        """Merge fields into manifest.json (written atomically)."""
        data = self.manifest()
        data.update(fields)
        tmp = self.file(MANIFEST + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.file(MANIFEST))

    @classmethod
    def create(cls, label: str, root: Path = DEFAULT_RUNS_ROOT, force: bool = False) -> RunDir:
        """A new, empty run directory `root/label`.

        Raises VimprofError if it already holds a campaign and `force` is false.
        """
        if not label or "/" in label or label.startswith("."):
            raise VimprofError(f"invalid label {label!r}: use a plain name such as 'stock'")
        path = root / label
        if path.exists() and any(path.iterdir()):
            if not force:
                raise VimprofError(
                    f"{path} already holds a campaign; pick another --label or pass --force"
                )
            for child in path.iterdir():
                if child.is_file():
                    child.unlink()
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def resolve(cls, ref: str, root: Path = DEFAULT_RUNS_ROOT) -> RunDir:
        """A run directory from a path or a label under `root`.

        Raises VimprofError if neither exists.
        """
        for candidate in (Path(ref), root / ref):
            if candidate.is_dir():
                return cls(candidate)
        raise VimprofError(
            f"no run directory {ref!r} (looked for {ref} and {root / ref}); "
            "run `vimprof capture --label NAME` first"
        )
