"""The Xen side of a campaign through Nomad on Xen: XenStore timing, dom0's clock, the
direct-xl floor, and no domain left behind (vimprof.campaigns.nomad with the xl backend)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from vimprof.drivers.xenstore import DomainWatcher
from vimprof.drivers.xl_floor import xl_floor_probe
from vimprof.errors import VimprofError
from vimprof.lab.nomad_xen import (
    DOMAIN_PREFIX,
    FLOOR_CFG,
    FLOOR_NAME,
    destroy_leftovers,
    dom0_clock_offset,
    sync_dom0_clock,
)


class XLCampaign:
    """The Xen side of a campaign through Nomad on Xen (vimprof.campaigns.nomad.run_campaign).

    `start()` starts a DomainWatcher on `xenstored_socket`; `before_run(i)` steps dom0's clock
    onto the host's when it is more than CLOCK_TOLERANCE_NS plus twice the reading's
    uncertainty off (Nomad's task events and the
    plugin's hooks carry dom0's clock); `after_run(i, alloc_id, floor)` returns the hooks.jsonl
    records of run i: the watcher's domain_created/domain_released records of the allocation's
    domain (named nomad-<task>-<alloc id[:8]>, given its "alloc_id": a domain_created phase
    inside spawn) and, with `floor`, a direct-xl create/destroy of the same kernel
    (vimprof.drivers.xl_floor: "probe": "floor", "backend": "xl"; the watcher's records of
    that domain carry "probe": "floor" too). `finish()` stops the watcher, destroys domains
    left behind and returns the records not yet handed out; `summary()` is for the manifest:
    clock offsets per run, leaked domains, watcher error. Raises VimprofError from `start`
    when xenstored cannot be reached.
    """

    CLOCK_TOLERANCE_NS = 3_000_000

    def __init__(self, xenstored_socket: str | None):
        if not xenstored_socket:
            raise VimprofError("the xl backend needs the Xen lab: `vimprof lab up xen`")
        self.watcher = DomainWatcher(xenstored_socket)
        self.taken = 0
        self.clock: list[dict[str, float]] = []
        self.leaked: list[str] = []
        self.by_name: dict[str, str] = {}  # domain name -> alloc id

    def start(self) -> None:
        self.watcher.start()

    def before_run(self, i: int) -> None:
        off, unc = dom0_clock_offset(samples=3)
        entry = {"run": i, "offset_ms": round(off / 1e6, 3), "uncertainty_ms": round(unc / 1e6, 3)}
        if abs(off) > self.CLOCK_TOLERANCE_NS + 2 * unc:  # beyond the reading's noise
            entry.update(sync_dom0_clock())
        self.clock.append(entry)

    def _drain(self) -> list[dict[str, Any]]:
        new = list(self.watcher.records[self.taken:])
        self.taken += len(new)
        out = []
        for rec in new:
            rec = dict(rec)
            name = rec.get("name") or ""
            if name == FLOOR_NAME:
                rec["probe"] = "floor"
            elif name in self.by_name:
                rec["alloc_id"] = self.by_name[name]
            out.append(rec)
        return out

    def after_run(self, i: int, alloc_id: str | None, floor: bool) -> list[dict[str, Any]]:
        if alloc_id:
            self.by_name[f"{DOMAIN_PREFIX}micro-vnf-{alloc_id[:8]}"] = alloc_id
        recs: list[dict[str, Any]] = []
        if floor:
            recs += xl_floor_probe(runs=1, cfg=FLOOR_CFG, name=FLOOR_NAME, first_run=i)
        time.sleep(0.2)  # the watcher takes the last events off the connection
        return self._drain() + recs

    def finish(self) -> list[dict[str, Any]]:
        with contextlib.suppress(VimprofError):
            self.leaked = destroy_leftovers()
        time.sleep(0.2)
        with contextlib.suppress(VimprofError):  # a failed watcher: its error is in summary()
            self.watcher.stop()
        return self._drain()

    def summary(self) -> dict[str, Any]:
        return {"dom0_clock": self.clock, "leaked_domains": self.leaked,
                "watcher_error": str(self.watcher.error) if self.watcher.error else None,
                "domain_records": self.taken}
