"""Collect driver timestamp hooks into a run directory, and measure the hypervisor's floor.

The micro-VNF driver plugin (patches/nomad-xen/README.md) appends one JSON line per hook
interval to its `hooks_file` on the client host:

    {"t_ns": <start ns>, "end_ns": <end ns>, "hook": "init_environment" | "spawn" | "clean",
     "alloc_id": "...", "task": "...", "driver": "xen", "variant": "stock" | "tuned",
     "backend": "qemu" | "xl", "node": "..."}

`HooksTail` reads that file incrementally and hands each campaign the lines of its own
allocations; the campaign writes them to the run's hooks.jsonl. `floor_probe` boots the same
guest with the same backend without any VIM (Ventre et al. 2016, Sec. V-B compares the
driver's spawn with running `xl` directly) and returns a hooks.jsonl record:

    {"probe": "floor", "hook": "spawn", "t_ns": <launch ns>, "end_ns": <ready ns>,
     "run": i, "backend": "qemu", "accelerator": "tcg", "memory_mb": 128}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vimprof.lab import accel


class HooksTail:
    """Incremental reader of a driver's hooks file; lines are grouped by instance id.

    `key` names the id field: "alloc_id" (the Nomad plugin) or "instance_uuid" (the Nova
    driver kit, vimprof/drivers/nova/hooks.py); with `alias` each record also gets the id
    under that name (the analyzer reads Nova hooks by "instance"). With no `path` (no hooks
    file) nothing is ever handed out. Only complete lines are consumed (a line being written
    is read on the next call); lines that are not JSON objects with the id are counted in
    `bad_lines` and skipped.
    """

    def __init__(self, path: Path | str | None, from_end: bool = True, key: str = "alloc_id",
                 alias: str | None = None):
        self.path = Path(path) if path else None
        self.offset = (self.path.stat().st_size
                       if from_end and self.path and self.path.exists() else 0)
        self.key = key
        self.alias = alias
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.bad_lines = 0

    def _read(self) -> None:
        if self.path is None:
            return
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                self.bad_lines += 1
                continue
            if isinstance(rec, dict) and isinstance(rec.get(self.key), str):
                if self.alias:
                    rec[self.alias] = rec[self.key]
                self.pending.setdefault(rec[self.key], []).append(rec)
            else:
                self.bad_lines += 1

    def take(self, instance: str | None) -> list[dict[str, Any]]:
        """The hook records of `instance` seen so far (each returned once), in file order."""
        self._read()
        return self.pending.pop(instance, []) if instance else []

    def take_all(self, instances: set[str]) -> list[dict[str, Any]]:
        """Every not yet returned record of the given instances, sorted by id."""
        self._read()
        out: list[dict[str, Any]] = []
        for a in sorted(instances & self.pending.keys()):
            out.extend(self.pending.pop(a))
        return out


def floor_probe(kernel: Path, accelerator: str, memory_mb: int, run: int,
                timeout_s: float = 30.0) -> dict[str, Any]:
    """Boot `kernel` directly under QEMU (the plugin's qemu backend, no VIM) once.

    Returns the hooks.jsonl record above; `end_ns - t_ns` is launch to the guest's readiness
    line, the same end point the plugin's `spawn` hook uses. Raises VimprofError when QEMU is
    missing, exits early or the guest is not ready within `timeout_s`.
    """
    start_ns, ready_ns = accel.boot_once(accel.qemu_binary(), Path(kernel), accelerator,
                                         timeout_s, memory_mb)
    return {"probe": "floor", "hook": "spawn", "t_ns": start_ns, "end_ns": ready_ns,
            "run": run, "backend": "qemu", "accelerator": accelerator, "memory_mb": memory_mb}
