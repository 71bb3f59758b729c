"""The direct-xl floor probe: `xl create` / `xl destroy` of a guest in the Xen lab's dom0, no VIM.

Ventre et al. 2016 (Sec. V-B) compare the driver's spawn with running `xl` directly; this is that
floor on the Xen lab (vimprof.lab.xen). Each run creates the guest and destroys it again, both
timed in dom0 by vp-run (CLOCK_MONOTONIC around the `xl` process), and returns hooks.jsonl
records:

    {"probe": "floor", "hook": "spawn", "t_ns": <ns>, "end_ns": <ns>, "run": i,
     "backend": "xl", "guest": "vp-test", "domid": 7}
    {"probe": "floor", "hook": "clean", "t_ns": <ns>, "end_ns": <ns>, "run": i,
     "backend": "xl", "guest": "vp-test", "domid": 7}

`spawn` is `xl create` (the paper's spawn), `clean` is `xl destroy`. Durations (`end_ns - t_ns`)
are dom0's; the instants are mapped to the host's time.time_ns() clock by assuming the relay's
latency is the same both ways (the midpoint of request and reply on the host is the midpoint of
the relay's command in dom0), so a DomainWatcher's domain_created records fall inside `spawn`.
"""

from __future__ import annotations

import re
from typing import Any

from vimprof.errors import VimprofError
from vimprof.lab import xen


def _host_ns(res: xen.CommandResult, dom0_ns: int) -> int:
    """Map a dom0 CLOCK_MONOTONIC instant of `res` onto the host clock (symmetric latency)."""
    _, o0, o1 = res.markers[-1]
    return dom0_ns + (res.sent_ns + res.received_ns) // 2 - (o0 + o1) // 2


def _timed(command: str, state: xen.XenLabState, timeout_s: float) -> tuple[int, int, str]:
    """Run `command` under vp-run in dom0; (t_ns, end_ns, output) on the host clock.

    Raises VimprofError with the command's output when it exits non-zero.
    """
    res = xen.run(f"{xen.VP_RUN} {command}", timeout_s=timeout_s, state=state)
    rc, t0, t1 = res.markers[0]
    if rc != 0 or len(res.markers) < 2:
        raise VimprofError(f"`{command}` failed in dom0 (exit {rc}): {res.output.strip()[-800:]}")
    return _host_ns(res, t0), _host_ns(res, t1), res.output


def _domid(name: str, state: xen.XenLabState) -> int | None:
    res = xen.run(f"xl domid {name}", timeout_s=30, state=state)
    m = re.search(r"^(\d+)\s*$", res.output, re.M)
    return int(m.group(1)) if res.rc == 0 and m else None


def xl_floor_probe(runs: int = 5, cfg: str = xen.TEST_GUEST_CFG,
                   name: str = xen.TEST_GUEST_NAME, state: xen.XenLabState | None = None,
                   timeout_s: float = 120.0, first_run: int = 0) -> list[dict[str, Any]]:
    """Create and destroy guest `name` (xl config `cfg`, a path in dom0) `runs` times.

    Returns the spawn and clean records above, two per run, numbered from `first_run`. A guest
    of that name left over from an earlier run is destroyed first. Raises VimprofError when the
    Xen lab is not running or `xl` fails (its message is included).
    """
    state = state or xen.current()
    if state is None:
        raise VimprofError("the Xen lab is not running: `vimprof lab up xen`")
    records: list[dict[str, Any]] = []
    if _domid(name, state) is not None:
        _timed(f"xl destroy {name}", state, timeout_s)
    for i in range(first_run, first_run + runs):
        t_ns, end_ns, _ = _timed(f"xl create {cfg}", state, timeout_s)
        domid = _domid(name, state)
        base = {"probe": "floor", "run": i, "backend": "xl", "guest": name, "domid": domid}
        records.append({**base, "hook": "spawn", "t_ns": t_ns, "end_ns": end_ns})
        t_ns, end_ns, _ = _timed(f"xl destroy {name}", state, timeout_s)
        records.append({**base, "hook": "clean", "t_ns": t_ns, "end_ns": end_ns})
    return records
