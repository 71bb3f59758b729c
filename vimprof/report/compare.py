"""Load the timelines of run directories and compare their phases label by label.

A label is one run directory (its name): `vimprof compare stock tuned` compares the phases of
runs/stock and runs/tuned. The first label is the baseline; every row carries the ratio of its
median to the baseline's median for the same phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vimprof.errors import VimprofError
from vimprof.phases import MODELS, PhaseModel, model_for
from vimprof.report.stats import PhaseStats, phase_stats
from vimprof.rundir import REQUESTS, TIMELINES, RunDir


@dataclass
class LabelData:
    """The phase durations of one run directory.

    `durations_ms[phase]` holds one value per instance that has the phase, in file order.
    Incomplete instances (`"complete": false`) still contribute the phases they have; they are
    counted in `incomplete`. `failures` counts requests.jsonl records with `"ok": false`.
    `derived_total` counts instances whose `total` was not in the record and was computed
    from the stack phases (first stack start to last stack end).
    """

    run: RunDir
    vim: str
    durations_ms: dict[str, list[float]] = field(default_factory=dict)
    instances: int = 0
    incomplete: int = 0
    requests: int = 0
    failures: int = 0
    derived_total: int = 0

    @property
    def label(self) -> str:
        return self.run.label

    @property
    def model(self) -> PhaseModel:
        return model_for(self.vim)


@dataclass(frozen=True)
class PhaseRow:
    """One (phase, label) cell of the comparison; `ratio` = median / baseline median."""

    phase: str
    label: str
    stats: PhaseStats
    ratio: float  # NaN when either median is undefined or the baseline median is 0


@dataclass
class Comparison:
    """Phase statistics of 1..n labels of one VIM; labels[0] is the baseline."""

    model: PhaseModel
    labels: list[LabelData]
    phases: list[str]
    rows: list[PhaseRow]
    confidence: float = 0.95

    @property
    def baseline(self) -> LabelData:
        return self.labels[0]

    @property
    def label_names(self) -> list[str]:
        return [d.label for d in self.labels]

    def row(self, phase: str, label: str) -> PhaseRow:
        for r in self.rows:
            if r.phase == phase and r.label == label:
                return r
        raise KeyError((phase, label))

    def stats(self, phase: str, label: str) -> PhaseStats:
        return self.row(phase, label).stats


def _phase_ms(phase: dict[str, Any]) -> float | None:
    ms = phase.get("ms")
    if ms is None and phase.get("start_ns") is not None and phase.get("end_ns") is not None:
        ms = (phase["end_ns"] - phase["start_ns"]) / 1e6
    if ms is None:
        return None
    ms = float(ms)
    return ms if math.isfinite(ms) else None


def _derived_total_ms(phases: dict[str, Any], model: PhaseModel) -> float | None:
    """Total from the stack phases: earliest start to latest end, if they all have both."""
    spans = [phases.get(p) for p in model.stack]
    if not spans or any(
        not isinstance(s, dict) or s.get("start_ns") is None or s.get("end_ns") is None
        for s in spans
    ):
        return None
    start = min(s["start_ns"] for s in spans)  # type: ignore[index]
    end = max(s["end_ns"] for s in spans)  # type: ignore[index]
    return (end - start) / 1e6


def load_label(run: RunDir) -> LabelData:
    """Read `run`'s timelines.jsonl (and requests.jsonl for failures) into a LabelData.

    Raises VimprofError when timelines.jsonl is missing or holds no record, when a record has
    no known `vim`, or when records of one run disagree on the VIM.
    """
    records = run.read(TIMELINES)
    if not records:
        raise VimprofError(
            f"{run.path} has no timelines.jsonl: run `vimprof analyze {run.path}` first"
        )
    vims = {r.get("vim") for r in records}
    if len(vims) != 1:
        found = ", ".join(sorted(str(v) for v in vims))
        raise VimprofError(f"{run.path}/{TIMELINES} mixes VIMs ({found}); re-run the analyzer")
    vim = vims.pop()
    if vim not in MODELS:
        raise VimprofError(
            f"{run.path}/{TIMELINES}: unknown VIM {vim!r} (known: {', '.join(sorted(MODELS))})"
        )
    data = LabelData(run=run, vim=vim)
    model = data.model
    for rec in records:
        data.instances += 1
        if rec.get("complete") is False:
            data.incomplete += 1
        phases = rec.get("phases") or {}
        for name, phase in phases.items():
            if not isinstance(phase, dict):
                continue
            ms = _phase_ms(phase)
            if ms is not None:
                data.durations_ms.setdefault(name, []).append(ms)
        if model.total not in phases:
            total = _derived_total_ms(phases, model)
            if total is not None:
                data.durations_ms.setdefault(model.total, []).append(total)
                data.derived_total += 1
    for req in run.read(REQUESTS):
        data.requests += 1
        if req.get("ok") is False:
            data.failures += 1
    return data


def _phase_order(model: PhaseModel, labels: list[LabelData]) -> list[str]:
    """The stack phases, then other phases in first-seen order, then the total."""
    order = list(model.stack)
    for d in labels:
        for p in d.durations_ms:
            if p not in order and p != model.total:
                order.append(p)
    order.append(model.total)
    return order


def _ratio(value: float, base: float) -> float:
    if math.isnan(value) or math.isnan(base) or base == 0:
        return math.nan
    return value / base


def compare(runs: list[RunDir], confidence: float = 0.95) -> Comparison:
    """Per-phase statistics of each run; runs[0] is the baseline.

    Raises VimprofError for no runs, two runs with the same label, or runs of different VIMs.
    """
    if not runs:
        raise VimprofError("nothing to compare: give one or more run directories")
    names = [r.label for r in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise VimprofError(
            f"two runs share the label {dupes[0]!r}; labels name the bars, give distinct ones"
        )
    labels = [load_label(r) for r in runs]
    vims = {d.vim for d in labels}
    if len(vims) > 1:
        which = ", ".join(f"{d.label}={d.vim}" for d in labels)
        raise VimprofError(f"cannot compare runs of different VIMs ({which})")
    model = labels[0].model
    phases = _phase_order(model, labels)
    rows: list[PhaseRow] = []
    for phase in phases:
        base: PhaseStats | None = None
        for d in labels:
            st = phase_stats(d.durations_ms.get(phase, []), phase, confidence)
            if base is None:
                base = st
            rows.append(PhaseRow(phase, d.label, st, _ratio(st.median_ms, base.median_ms)))
    return Comparison(model=model, labels=labels, phases=phases, rows=rows, confidence=confidence)
