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
    """How a VIM's phases are drawn: `stack` phases laid end to end add up to about `total`."""

    vim: str
    stack: tuple[str, ...]
    total: str

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.stack, self.total)


NOMAD = PhaseModel(vim="nomad", stack=("scheduling", "instantiation"), total="total")

MODELS: dict[str, PhaseModel] = {m.vim: m for m in (NOMAD,)}


def model_for(vim: str) -> PhaseModel:
    """The phase model of `vim` ('nomad'); raises KeyError for an unknown VIM."""
    return MODELS[vim]
