"""Nomad timelines without the wire: client instants plus Nomad's own allocation and task events.

Used for every allocation of the run's requests.jsonl that the capture gave no timeline for:
the RPC between client and server was TLS (a production cluster), or nothing was captured.
The phases approximate the wire model of builders/nomad_phases.py with the nearest
instant each other source has, and say so in their "source" and "from"/"to":

| phase         | from                                  | to                                       |
|---------------|---------------------------------------|------------------------------------------|
| api           | pusher sent Job.Register (client)     | pusher got its reply (client)            |
| scheduling    | pusher sent Job.Register (client)     | task event Received (vim, client clock)  |
| task_start    | task event Received (vim)             | task event Started (vim)                 |
| notification  | task event Started (vim)              | Allocation running: ModifyTime (vim)     |
| instantiation | task event Received (vim)             | Allocation running: ModifyTime (vim)     |
| total         | pusher sent Job.Register (client)     | Allocation running: ModifyTime (vim)     |
| stop          | pusher sent the stop (client)         | Allocation complete/failed: ModifyTime   |

ModifyTime is stamped by the server when it receives the client's Node.UpdateAlloc
(nomad/node_endpoint.go UpdateAlloc), the instant the wire model's total ends at.
`client_pickup` and `commit` need the wire and are left out, each with the reason in "issues".
Instants in ns since the epoch; the pusher, the server and the client may run on three clocks
(the manifest's "clock" says whether they are one).

Analyzer stage 4, builders (vimprof/analyzer/__init__.py): requests.jsonl and
vim-events.jsonl records in (no messages), Nomad timeline dicts out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from vimprof.phases import NOMAD

TERMINAL = ("complete", "failed", "lost")


def timelines_from_events(requests: Iterable[dict[str, Any]],
                          vim_events: Iterable[dict[str, Any]], skip: set[str],
                          why_no_wire: str) -> list[dict[str, Any]]:
    """One timeline per Nomad request of requests.jsonl whose allocation is not in `skip`
    (those the capture gave) and that Nomad's event stream spoke of (records with "via":
    "event-stream": vimprof.pushers.nomad_events); `why_no_wire` says why the wire gave
    nothing ("the capture is TLS-encrypted"), for the issues of the phases left out."""
    by_alloc: dict[str, list[dict[str, Any]]] = defaultdict(list)
    streamed: set[str] = set()
    for ev in vim_events:
        if isinstance(ev.get("subject"), str) and isinstance(ev.get("t_ns"), int):
            by_alloc[ev["subject"]].append(ev)
            if ev.get("via") == "event-stream":
                streamed.add(ev["subject"])
    out = []
    for req in requests:
        aid = req.get("alloc_id")
        if req.get("vim", "nomad") != "nomad" or not aid or aid in skip or aid not in streamed:
            continue
        out.append(_timeline(req, sorted(by_alloc[aid], key=lambda e: e["t_ns"]), why_no_wire))
    return out


def _first(events: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((e for e in events if e.get("name") == name), None)


def _timeline(req: dict[str, Any], events: list[dict[str, Any]], why: str) -> dict[str, Any]:
    client = {k: req.get(k) for k in ("t_submit_ns", "t_registered_ns", "t_stop_ns")}
    received = _first(events, "Received")
    started = _first(events, "Started")
    running = _first(events, "Allocation running")
    ended = next((e for e in events if e.get("name") in {f"Allocation {s}" for s in TERMINAL}),
                 None)
    phases: dict[str, dict[str, Any]] = {}
    issues: list[str] = []

    def point(ev: dict[str, Any] | None, label: str) -> tuple[int, str, str] | None:
        return (ev["t_ns"], label, "vim") if ev else None

    def cli(key: str, label: str) -> tuple[int, str, str] | None:
        return (client[key], label, "client") if isinstance(client[key], int) else None

    def phase(name: str, a: tuple[int, str, str] | None, b: tuple[int, str, str] | None,
              a_name: str, b_name: str) -> None:
        if a is None or b is None:
            miss = [n for n, p in ((a_name, a), (b_name, b)) if p is None]
            issues.append(f"{name} left out: missing {' and '.join(miss)}")
            return
        if b[0] < a[0]:
            issues.append(f"{name} left out: {b[1]} precedes {a[1]}")
            return
        phases[name] = {"start_ns": a[0], "end_ns": b[0], "ms": round((b[0] - a[0]) / 1e6, 3),
                        "from": a[1], "to": b[1],
                        "source": a[2] if a[2] == b[2] else f"{a[2]}+{b[2]}"}

    submit = cli("t_submit_ns", "pusher sent Job.Register")
    run_pt = point(running, "Allocation running (ModifyTime)")
    recv_pt = point(received, "Task event Received")
    phase("api", submit, cli("t_registered_ns", "pusher got the Job.Register reply"),
          "the pusher's submit instant", "its reply instant")
    phase("scheduling", submit, recv_pt, "the pusher's submit instant", "task event Received")
    phase("task_start", recv_pt, point(started, "Task event Started"), "task event Received",
          "task event Started")
    phase("notification", point(started, "Task event Started"), run_pt, "task event Started",
          "event Allocation running")
    phase("instantiation", recv_pt, run_pt, "task event Received", "event Allocation running")
    phase(NOMAD.total, submit, run_pt, "the pusher's submit instant", "event Allocation running")
    if isinstance(client["t_stop_ns"], int) and ended is not None:
        phase("stop", cli("t_stop_ns", "pusher sent the stop"),
              point(ended, f"{ended['name']} (ModifyTime)"), "", "")
    for name in ("client_pickup", "commit"):
        issues.append(f"{name} not measured: it needs the RPC on the wire, and {why}")
    return {
        "vim": NOMAD.vim,
        "instance": req["alloc_id"],
        "job": req.get("job_id"),
        "run": req.get("run"),
        "complete": all(p in phases for p in NOMAD.all),
        "issues": issues,
        "events": [{"t_ns": e["t_ns"], "source": "vim", "host": None, "name": e["name"],
                    "attrs": {k: e[k] for k in ("via", "task", "index") if k in e}}
                   for e in events],
        "phases": phases,
        "sources": "client+vim",
    }
