"""Nomad's own allocation events during a campaign, from its event stream (/v1/event/stream).

Where the RPC between Nomad's client and server is TLS, the capture yields no wire instants;
Nomad's allocation events still say when each allocation was created and when the server took
in each client status: `CreateTime` and `ModifyTime` are server clock instants, ModifyTime set
when the server receives the client's Node.UpdateAlloc (nomad/node_endpoint.go UpdateAlloc).
The stream needs read-job on the namespace (nomad/event_endpoint.go).

Records (vim-events.jsonl, source "vim", via "event-stream"):
    {"t_ns": CreateTime, "name": "Allocation created", "subject": alloc id, "job": job id, ...}
    {"t_ns": ModifyTime, "name": "Allocation <client status>", ...}  first time per status
with "received_ns" (when the stream delivered it to vimprof) and the event's Raft "index".
"""

from __future__ import annotations

import json
import threading
from typing import Any

import requests

from vimprof.pushers.nomad_access import ClusterAccess
from vimprof.rundir import now_ns

VIA = "event-stream"


class EventStream:
    """A thread following the cluster's Allocation events of jobs named `prefix`*.

    `start()` opens the stream (raises VimprofError-free: a refused stream is reported in
    `error`, the campaign goes on with what the capture and the pusher give); `take()` returns
    the records gathered so far; `stop()` closes it.
    """

    def __init__(self, access: ClusterAccess, prefix: str, namespace: str = "default"):
        self.access, self.prefix, self.namespace = access, prefix, namespace
        self.error: str | None = None
        self._records: list[dict[str, Any]] = []
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._resp: requests.Response | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> EventStream:
        s = self.access.session()
        try:
            self._resp = s.get(f"{self.access.addr}/v1/event/stream", stream=True, timeout=(10, 30),
                               params={"topic": "Allocation:*", "namespace": self.namespace})
        except requests.RequestException as exc:
            self.error = f"event stream unreachable: {type(exc).__name__}"
            return self
        if self._resp.status_code != 200:
            self.error = f"event stream refused: HTTP {self._resp.status_code}"
            self._resp.close()
            self._resp = None
            return self
        self._thread = threading.Thread(target=self._read, name="nomad-event-stream",
                                        daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._resp is not None
        try:
            for line in self._resp.iter_lines():
                if self._stop.is_set():
                    return
                if line:
                    self._frame(json.loads(line), now_ns())
        except (requests.RequestException, ValueError, AttributeError) as exc:
            if not self._stop.is_set():
                self.error = f"event stream ended: {type(exc).__name__}"

    def _frame(self, frame: dict[str, Any], received_ns: int) -> None:
        """One NDJSON frame: {"Index": n, "Events": [...]} ({} is a heartbeat)."""
        for ev in frame.get("Events") or []:
            alloc = (ev.get("Payload") or {}).get("Allocation") or {}
            job = alloc.get("JobID") or ""
            if ev.get("Topic") != "Allocation" or not job.startswith(self.prefix):
                continue
            base = {"source": "vim", "via": VIA, "subject": alloc.get("ID"), "job": job,
                    "received_ns": received_ns, "index": ev.get("Index")}
            out = []
            if (alloc.get("ID"), "created") not in self._seen and alloc.get("CreateTime"):
                self._seen.add((alloc["ID"], "created"))
                out.append({**base, "t_ns": int(alloc["CreateTime"]), "name": "Allocation created"})
            status = alloc.get("ClientStatus")
            if status and (alloc.get("ID"), status) not in self._seen and alloc.get("ModifyTime"):
                self._seen.add((alloc["ID"], status))
                out.append({**base, "t_ns": int(alloc["ModifyTime"]),
                            "name": f"Allocation {status}"})
            if out:
                with self._lock:
                    self._records.extend(out)

    def take(self) -> list[dict[str, Any]]:
        """The records gathered since the last call."""
        with self._lock:
            out, self._records = self._records, []
        return out

    def stop(self) -> None:
        self._stop.set()
        if self._resp is not None:
            self._resp.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
