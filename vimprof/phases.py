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
                               "source": "capture"}, ...}}
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

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.stack, self.total)


NOMAD = PhaseModel(
    vim="nomad",
    stack=("scheduling", "instantiation"),
    total="total",
    breakdown=("download_artifact", "init_environment", "spawn", "clean"),
    breakdown_of="instantiation",
)

NOVA = PhaseModel(
    vim="nova",
    stack=("api", "scheduler", "compute"),
    total="total",
    breakdown=("create_image", "generate_xml", "libvirt_spawn", "wait_boot"),
    breakdown_of="spawn",
)

MODELS: dict[str, PhaseModel] = {m.vim: m for m in (NOMAD, NOVA)}


def model_for(vim: str) -> PhaseModel:
    """The phase model of `vim` ('nomad'); raises KeyError for an unknown VIM."""
    return MODELS[vim]
