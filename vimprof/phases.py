"""Phase names and how they nest, per VIM (ARCHITECTURE.md "Units and names").

The model follows Ventre et al. 2016 (shared/reference/ventre-2016-vim-tuning.txt), Fig. 2 and
Fig. 6: VIM core components (scheduling), VIM local components (instantiation), compute (spawn).

A timeline record in timelines.jsonl (one per instance) has this shape:

    {"vim": "nomad", "instance": "<allocation id>", "job": "<job id>", "run": 3 | null,
     "complete": true, "issues": ["<why a phase is missing>", ...],
     "events": [{"t_ns": int, "source": "capture", "host": "198.18.0.1",
                 "name": "Job.Register request", "attrs": {...}}, ...],
     "phases": {"scheduling": {"start_ns": int, "end_ns": int, "ms": float,
                               "from": "<event name>", "to": "<event name>",
                               "source": "capture"}, ...},
     "crosscheck": {"tolerance_ms": 50.0, "disagreements": 0,
                    "checks": [{"check": str, "rule": "equal" | "after" | "before",
                                "capture_ns": int, "other_ns": int, "other": "vim-events",
                                "diff_ms": float, "ok": bool}, ...]}}

Nova records have "vim": "nova", "instance": <server uuid>, "job": <its request id>.
Event and phase "source": "capture" (the wire), "hook" (driver hooks.jsonl), "vim" (the
VIM's own events, vim-events.jsonl). "crosscheck" is present when the run has
vim-events.jsonl, hooks.jsonl or requests.jsonl (analyzer/enrich.py); each failed check also
adds an "issues" line starting with "crosscheck:". Phase names per VIM: the models below
(stack, total, breakdown, detail, stop); a phase may be missing (complete=false, an issue).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PhaseModel:
    """How a VIM's phases are drawn, at two levels (ARCHITECTURE.md "Units and names").

    VIM level: the `stack` phases laid end to end add up to about `total`.
    Driver level: the `breakdown` phases laid end to end make up `breakdown_of` (one stack
    phase, or a phase inside one): Fig. 6b (Nova spawn) and Fig. 6d (Nomad driver) of the paper.
    """

    vim: str
    stack: tuple[str, ...]
    total: str
    breakdown: tuple[str, ...] = ()
    breakdown_of: str = ""
    # Finer wire phases, each inside a stack phase (not additive; "api" spans the start of
    # the first stack phase, "notification" the end of the last one; Nomad's "commit" follows
    # the total: the server's reply to the running update).
    detail: tuple[str, ...] = ()
    stop: str = ""  # the delete path's phase (stop / purge), if any

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.stack, self.total)


NOMAD = PhaseModel(
    vim="nomad",
    stack=("scheduling", "instantiation"),
    total="total",
    breakdown=("download_artifact", "init_environment", "spawn", "clean"),
    breakdown_of="instantiation",
    detail=("api", "client_pickup", "task_start", "notification", "commit"),
    stop="stop",
)

# Nova (nova-internals.md section 2, the paper's Fig. 6a): api = POST /servers -> 202; conductor
# = schedule_and_build_instances cast -> select_destinations call; scheduler =
# select_destinations call -> reply; conductor_build = that reply -> build_and_run_instance cast
# (the conductor creates the instance); compute = build_and_run_instance cast -> save vm_state
# active; ready = vm_state active -> the client's first ACTIVE. Inside (detail): keystone and
# glance (inside api), network and spawn (inside compute). The breakdown of spawn (Fig. 6b)
# comes from driver hooks (hooks.jsonl), not from the wire: LibvirtDriver is not traced.
NOVA = PhaseModel(
    vim="nova",
    stack=("api", "conductor", "scheduler", "conductor_build", "compute", "ready"),
    total="total",
    breakdown=("create_image", "generate_xml", "libvirt_spawn", "wait_boot"),
    breakdown_of="spawn",
    detail=("keystone", "glance", "network", "spawn"),
    stop="delete",
)

MODELS: dict[str, PhaseModel] = {m.vim: m for m in (NOMAD, NOVA)}


def model_for(vim: str) -> PhaseModel:
    """The phase model of `vim` ('nomad'); raises KeyError for an unknown VIM."""
    return MODELS[vim]
