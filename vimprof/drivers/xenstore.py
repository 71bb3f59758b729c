"""XenStore as a timing source: domain appearance and removal as hook records, through pyxs.

A `DomainWatcher` holds one pyxs connection to xenstored (in the Xen lab: the Unix socket that
`vimprof.lab.xen` relays to dom0's xenstored) and watches `@introduceDomain`, `@releaseDomain`
and `/local/domain`. It does not change anything in XenStore (non-intrusive) and emits one
hook-style record per domain that appears or goes away:

    {"t_ns": <ns>, "end_ns": <ns>, "hook": "domain_created" | "domain_released",
     "domid": <int>, "name": <str | null>, "source": "xenstore"}

Instants are host `time.time_ns()` at which the watch event was taken off the connection.

- domain_created: `t_ns` is the first watch event under /local/domain/<domid> (libxl writes the
  domain's XenStore directory right after the hypervisor made the domain), `end_ns` the
  `@introduceDomain` event after which xenstored reports the domain introduced (its store ring
  connected: the domain is built; `xl create` returns shortly after). When no path event was
  seen first (a watcher started late), `t_ns == end_ns`.
- domain_released: from the first of (the `@releaseDomain` event after which the domain is no
  longer introduced: it is dying or gone; the removal of /local/domain/<domid>) to the second.
  A domain that only shuts down (on_poweroff = "preserve") is still introduced: not released.

Domains present when the watcher starts produce no records. Sources: the XenStore protocol
(xen.git docs/misc/xenstore.txt: special watches, IS_DOMAIN_INTRODUCED), libxl's domain
creation (libxl__domain_make, then xs_introduce_domain) and shared/design/xen-lab.md.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vimprof.errors import VimprofError

INTRODUCE = b"@introduceDomain"
RELEASE = b"@releaseDomain"
LOCAL = b"/local/domain"
_DOMPATH = re.compile(rb"^/local/domain/(\d+)(/.*)?$")
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 10.0


class DomainWatcher:
    """Watch one xenstored for domains created and released; collect hook records.

    `socket_path` is xenstored's Unix socket (vimprof.lab.xen.XenLabState.xenstored_socket).
    Records are kept in `records` (in order), appended as JSON lines to `out` when given, and
    passed to `on_record` (called in the watcher thread). Use as a context manager or call
    `start()` / `stop()`. Raises VimprofError when xenstored cannot be reached or does not
    answer within CONNECT_TIMEOUT_S.
    """

    def __init__(self, socket_path: str | Path, out: str | Path | None = None,
                 on_record: Callable[[dict[str, Any]], None] | None = None):
        self.socket_path = str(socket_path)
        self.out = Path(out) if out else None
        self.on_record = on_record
        self.records: list[dict[str, Any]] = []
        self.events = 0  # watch events seen, initial ones included
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._client: Any = None
        self._monitor: Any = None
        self._thread: threading.Thread | None = None
        self._live: dict[int, str | None] = {}  # introduced domains -> name
        self._first_seen: dict[int, int] = {}  # domid -> first /local/domain/<id> event
        self._gone_at: dict[int, int] = {}  # domid -> first instant it looked released
        self._done: set[int] = set()  # released domids: late events about them are ignored

    # -- pyxs with bounded waits ---------------------------------------------------------------
    def _bounded(self, fn: Callable[[], Any], what: str, timeout_s: float) -> Any:
        """pyxs waits forever for a reply that never comes (a dead relay): bound it."""
        box: dict[str, Any] = {}

        def go() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                box["error"] = exc

        t = threading.Thread(target=go, daemon=True)
        t.start()
        t.join(timeout_s)
        if "error" in box:
            raise VimprofError(f"xenstored ({self.socket_path}): {what} failed: {box['error']}")
        if "value" not in box:
            raise VimprofError(f"xenstored ({self.socket_path}) did not answer {what} within "
                               f"{timeout_s:.0f} s: is the Xen lab up? `vimprof lab status xen`")
        return box["value"]

    def _domids(self) -> list[int]:
        return [int(x) for x in self._client.list(LOCAL) if x.isdigit()]

    def _introduced(self, domid: int) -> bool:
        return bool(self._client.is_domain_introduced(domid))

    def _name(self, domid: int) -> str | None:
        raw = self._client.read(b"/local/domain/%d/name" % domid, None)
        return raw.decode(errors="replace") if raw is not None else None

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> DomainWatcher:
        """Connect, snapshot the domains present, set the three watches, start the thread."""
        from pyxs import Client

        self._client = Client(unix_socket_path=self.socket_path)
        self._bounded(self._client.connect, "connect", CONNECT_TIMEOUT_S)

        def snapshot() -> None:
            for domid in self._domids():
                if self._introduced(domid):
                    self._live[domid] = self._name(domid)
            self._monitor = self._client.monitor()
            for path in (INTRODUCE, RELEASE, LOCAL):
                self._monitor.watch(path, b"vimprof" + path)

        try:
            self._bounded(snapshot, "the initial snapshot and watches", CONNECT_TIMEOUT_S)
        except VimprofError:
            self._close_client()
            raise
        self._thread = threading.Thread(target=self._loop, name="xenstore-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        """Stop watching; returns all records. Raises VimprofError if the watcher failed."""
        self._stop.set()
        if self._thread:
            self._thread.join(REQUEST_TIMEOUT_S + 1)
        self._close_client()
        if self.error:
            raise VimprofError(f"the XenStore watcher failed: {self.error}")
        return list(self.records)

    def _close_client(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            # the router thread is a daemon; with a dead relay it is gone already
            with contextlib.suppress(VimprofError):
                self._bounded(client.close, "close", 5.0)

    def __enter__(self) -> DomainWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- events --------------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    path, token = self._monitor.events.get(timeout=0.1)
                except queue.Empty:
                    if not self._client.router.thread.is_alive():
                        raise VimprofError("the connection to xenstored closed") from None
                    continue
                self._handle(path, time.time_ns())
        except BaseException as exc:  # noqa: BLE001 - reported by stop() and wait_for()
            self.error = exc
            with self._cond:
                self._cond.notify_all()

    def _handle(self, path: bytes, now: int) -> None:
        self.events += 1
        m = _DOMPATH.match(path)
        if m:
            domid = int(m.group(1))
            if domid in self._done:
                return
            if domid not in self._live:
                self._first_seen.setdefault(domid, now)
            elif m.group(2) is None and not self._client.exists(path):
                self._released(domid, now)  # its directory went away
        elif path == INTRODUCE:
            for domid in sorted(set(self._first_seen) | set(self._domids())):
                if domid not in self._live and self._introduced(domid):
                    name = self._name(domid)
                    self._live[domid] = name
                    self._emit("domain_created", domid, name,
                               self._first_seen.pop(domid, now), now)
        elif path == RELEASE:
            for domid in list(self._live):
                if not self._introduced(domid):
                    self._released(domid, now)

    def _released(self, domid: int, now: int) -> None:
        """One of the two signs of release seen; emit when both are."""
        if domid not in self._gone_at:
            self._gone_at[domid] = now
        dir_gone = not self._client.exists(b"/local/domain/%d" % domid)
        if dir_gone and not self._introduced(domid):
            name = self._live.pop(domid)
            self._emit("domain_released", domid, name, self._gone_at.pop(domid), now)
            self._first_seen.pop(domid, None)
            self._done.add(domid)

    def _emit(self, hook: str, domid: int, name: str | None, t_ns: int, end_ns: int) -> None:
        rec = {"t_ns": t_ns, "end_ns": end_ns, "hook": hook, "domid": domid, "name": name,
               "source": "xenstore"}
        if self.out:
            with open(self.out, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        with self._cond:
            self.records.append(rec)
            self._cond.notify_all()
        if self.on_record:
            self.on_record(rec)

    def wait_for(self, hook: str, *, domid: int | None = None, name: str | None = None,
                 after: int = 0, timeout_s: float = 30.0) -> dict[str, Any]:
        """The first record of `hook` (matching `domid`/`name` when given) at index >= `after`
        in `records`. Raises VimprofError when none arrives within `timeout_s` or the
        watcher failed."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for rec in self.records[after:]:
                    if rec["hook"] == hook and domid in (None, rec["domid"]) and \
                            name in (None, rec["name"]):
                        return rec
                if self.error:
                    raise VimprofError(f"the XenStore watcher failed: {self.error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise VimprofError(f"no {hook} record (domid={domid}, name={name}) within "
                                       f"{timeout_s:.0f} s from xenstored")
                self._cond.wait(left)
