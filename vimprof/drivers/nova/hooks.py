"""Timestamp hooks of vimprof's Nova driver: one JSON line per interval, appended to a file.

Standard library only: this module runs inside nova-compute on Debian's /usr/bin/python3
(installed there by vimprof.drivers.nova.install) as well as in vimprof's tests. A line:

    {"t_ns": <start, ns since the Unix epoch>, "end_ns": <end, ns>, "hook": "create_image" |
     "generate_xml" | "libvirt_spawn" | "wait_boot" | "spawn", "instance_uuid": "<uuid>",
     "driver": "nova-diskless", "variant": "stock" | "tuned"}

Each line is written with one write(2) on an O_APPEND descriptor, so concurrent writers (several
greenthreads or processes) never interleave within a line. Errors writing the file are
swallowed: a hook must never fail a spawn.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

DRIVER = "nova-diskless"
ENV_FILE = "VIMPROF_NOVA_HOOKS"
DEFAULT_FILE = "/var/lib/nova/vimprof-hooks.jsonl"
HOOKS = ("create_image", "generate_xml", "libvirt_spawn", "wait_boot", "spawn")


def hooks_file() -> str:
    """Where hooks go: $VIMPROF_NOVA_HOOKS, else DEFAULT_FILE."""
    return os.environ.get(ENV_FILE) or DEFAULT_FILE


def record(hook: str, instance_uuid: str, variant: str, t_ns: int, end_ns: int,
           path: str | None = None, **extra: object) -> dict:
    """Append one hook line (shape above, plus `extra` keys) to `path` (default hooks_file());
    returns the record. Never raises for an unwritable file."""
    rec = {"t_ns": int(t_ns), "end_ns": int(end_ns), "hook": hook,
           "instance_uuid": str(instance_uuid), "driver": DRIVER, "variant": variant, **extra}
    line = (json.dumps(rec, separators=(",", ":"), sort_keys=True) + "\n").encode()
    with contextlib.suppress(OSError):
        fd = os.open(path or hooks_file(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    return rec


@contextlib.contextmanager
def span(hook: str, instance_uuid: str, variant: str, path: str | None = None):
    """Time the `with` body and record it as `hook` (also when the body raises: then the line
    carries "error": "<exception class>")."""
    t0 = time.time_ns()
    try:
        yield
    except BaseException as exc:
        record(hook, instance_uuid, variant, t0, time.time_ns(), path,
               error=type(exc).__name__)
        raise
    record(hook, instance_uuid, variant, t0, time.time_ns(), path)
