"""Load the timelines of run directories and compare their phases label by label.

A label is one run directory (its name): `vimprof compare stock tuned` compares the phases of
runs/stock and runs/tuned. The first label is the baseline; every other label gets, per
phase, a `Diff` against it:

- the difference and the ratio of the medians, each with a BCa bootstrap CI (two independent
  samples resampled separately, scipy.stats.bootstrap);
- the two-sided Mann-Whitney U test (scipy.stats.mannwhitneyu; exact null distribution when
  neither sample has ties and both have at most 100 values, else the normal approximation with
  tie and continuity corrections);
- a verdict: "faster" or "slower" when p < alpha AND the median moved by at least
  `min_effect` (a fraction, 0.05 = 5%) of the baseline median AND by at least `min_effect_ms`
  (1 ms: a 0.1 ms phase moving by microseconds is no finding), else "~" (no significant
  difference, as benchstat prints). p-values are not corrected for multiple comparisons.

Warm-up: runs are excluded only by the rule the campaign declared, `campaign.warmup_runs` in
the run directory's manifest.json (absent = 0): timeline, request and hook records whose
`"run"` index is below it are kept for the run-index chart but left out of every statistic.

The hypervisor floor: hooks.jsonl records `{"probe": "floor", "hook": "spawn", "t_ns": start,
"end_ns": end, "run": i, "backend": "qemu"}` time the hypervisor's own spawn without the VIM;
they become the pseudo-phase FLOOR_PHASE ("floor spawn").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as _sp

from vimprof.errors import VimprofError
from vimprof.phases import MODELS, PhaseModel, model_for
from vimprof.report.stats import N_RESAMPLES, PhaseStats, bootstrap_ci, phase_stats
from vimprof.rundir import HOOKS, REQUESTS, TIMELINES, RunDir

FLOOR_PHASE = "floor spawn"
FASTER, SLOWER, SAME = "faster", "slower", "~"
TEST_NAME = "Mann-Whitney U (two-sided)"
NAN = float("nan")


@dataclass
class Instance:
    """One timeline record, reduced: `ms[phase]` durations, `warmup` if excluded as warm-up."""

    run: int | None
    instance: str
    job: str
    complete: bool
    warmup: bool
    ms: dict[str, float]
    record: dict[str, Any]


@dataclass
class LabelData:
    """The phase durations of one run directory.

    `durations_ms[phase]` holds one value per counted (non-warm-up) instance that has the
    phase, in file order. Incomplete instances (`"complete": false`) still contribute the
    phases they have; they are counted in `incomplete`. `failures` counts requests.jsonl
    records with `"ok": false`. `derived_total` counts instances whose `total` was not in the
    record and was computed from the stack phases (first stack start to last stack end).
    `warmup_runs` is the manifest's `campaign.warmup_runs`; `warmup_excluded` the timeline
    records it removed; `all_instances` keeps every record, warm-up included, in file order.
    `floor_ms` holds the counted floor-probe durations (ms), `floor_runs` every probe as
    (run, ms, warmup). `request_records` keeps requests.jsonl as read (warm-up included);
    `failed_runs` the run indexes of counted failed requests; `manifest` manifest.json.
    `breakdown_overlaps[(a, b)]` counts counted instances where breakdown phases a and b
    overlap in time by more than 10 µs (the stacked breakdown bar then over-counts).
    `not_measured[phase]` says why a phase could not be measured at all (e.g. the RPC was
    TLS-encrypted: analyzer/builders/nomad_events.py).
    """

    run: RunDir
    vim: str
    durations_ms: dict[str, list[float]] = field(default_factory=dict)
    instances: int = 0
    incomplete: int = 0
    requests: int = 0
    failures: int = 0
    derived_total: int = 0
    warmup_runs: int = 0
    warmup_excluded: int = 0
    all_instances: list[Instance] = field(default_factory=list)
    floor_ms: list[float] = field(default_factory=list)
    floor_runs: list[tuple[int | None, float, bool]] = field(default_factory=list)
    failed_runs: set[int | None] = field(default_factory=set)
    manifest: dict[str, Any] = field(default_factory=dict)
    request_records: list[dict[str, Any]] = field(default_factory=list)
    breakdown_overlaps: dict[tuple[str, str], int] = field(default_factory=dict)
    # phase -> why no instance could have it (timelines' "PHASE not measured: WHY" issues)
    not_measured: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.run.label

    @property
    def model(self) -> PhaseModel:
        return model_for(self.vim)

    @property
    def counted(self) -> list[Instance]:
        """The instances the statistics use (warm-up excluded)."""
        return [i for i in self.all_instances if not i.warmup]

    def failures_for(self, phase: str) -> int:
        """Failed requests plus incomplete counted instances (of other runs) lacking `phase`."""
        if phase == FLOOR_PHASE:
            return 0
        missing = sum(
            1
            for i in self.counted
            if not i.complete and phase not in i.ms and i.run not in self.failed_runs
        )
        return self.failures + missing

    @property
    def warmup_text(self) -> str:
        """One sentence on the warm-up rule applied to this label (for every output)."""
        if self.warmup_runs <= 0:
            return (
                f"{self.label}: no warm-up declared (manifest campaign.warmup_runs absent or 0): "
                "every run counted"
            )
        which = "run 0" if self.warmup_runs == 1 else f"runs 0..{self.warmup_runs - 1}"
        return (
            f"{self.label}: warm-up {which} excluded "
            f"(manifest campaign.warmup_runs = {self.warmup_runs}; "
            f"{self.warmup_excluded} timeline(s) left out)"
        )


@dataclass(frozen=True)
class Diff:
    """One label against the baseline for one phase (medians in ms; ratio = label / base).

    CIs are (low, high), NaN when undefined; `p_value` is NaN when a sample has < 2 values.
    `verdict` is FASTER, SLOWER or SAME; `note` says why a verdict is "~" when it is not
    simply p >= alpha ("" otherwise). `method` names the test variant (exact / asymptotic).
    """

    base_label: str
    n_base: int
    n: int
    median_base_ms: float
    median_ms: float
    delta_ms: float
    delta_ci_ms: tuple[float, float]
    ratio: float
    ratio_ci: tuple[float, float]
    p_value: float
    method: str
    verdict: str
    note: str = ""

    @property
    def change_pct(self) -> float:
        """(ratio - 1) · 100: + slower, - faster; NaN when undefined."""
        return (self.ratio - 1.0) * 100.0


@dataclass(frozen=True)
class PhaseRow:
    """One (phase, label) cell of the comparison; `ratio` = median / baseline median.

    `diff` is None for the baseline's own rows.
    """

    phase: str
    label: str
    stats: PhaseStats
    ratio: float  # NaN when either median is undefined or the baseline median is 0
    diff: Diff | None = None


@dataclass
class Comparison:
    """Phase statistics of 1..n labels of one VIM; labels[0] is the baseline."""

    model: PhaseModel
    labels: list[LabelData]
    phases: list[str]
    rows: list[PhaseRow]
    confidence: float = 0.95
    alpha: float = 0.05
    min_effect: float = 0.05
    min_effect_ms: float = 1.0
    gate_messages: list[str] = field(default_factory=list)  # set by report.write_report
    # label -> its validity flags (report.validity.Flag), set by report.write_report
    # (validity.check_comparison); empty: not checked
    validity: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def baseline(self) -> LabelData:
        return self.labels[0]

    @property
    def label_names(self) -> list[str]:
        return [d.label for d in self.labels]

    def label(self, name: str) -> LabelData:
        for d in self.labels:
            if d.label == name:
                return d
        raise KeyError(name)

    def row(self, phase: str, label: str) -> PhaseRow:
        for r in self.rows:
            if r.phase == phase and r.label == label:
                return r
        raise KeyError((phase, label))

    def stats(self, phase: str, label: str) -> PhaseStats:
        return self.row(phase, label).stats

    def has_breakdown(self) -> bool:
        """True when some label has a phase of the model's driver/spawn breakdown."""
        return any(
            self.stats(p, lab).n > 0
            for p in self.model.breakdown
            if p in self.phases
            for lab in self.label_names
        )

    def chart_phases(self) -> list[str]:
        """Phases the distribution charts show: stack, breakdown, floor, total (with data)."""
        keep = {*self.model.stack, *self.model.breakdown, FLOOR_PHASE, self.model.total}
        return [
            p for p in self.phases
            if p in keep and any(self.stats(p, lab).n > 0 for lab in self.label_names)
        ]

    @property
    def has_floor(self) -> bool:
        return FLOOR_PHASE in self.phases

    @property
    def warmup_note(self) -> str:
        """Short form for chart titles: 'warm-up excluded: a runs 0-1; b none declared'."""
        parts = [
            f"{d.label} none declared" if d.warmup_runs <= 0
            else f"{d.label} run 0" if d.warmup_runs == 1
            else f"{d.label} runs 0-{d.warmup_runs - 1}"
            for d in self.labels
        ]
        if all(d.warmup_runs <= 0 for d in self.labels):
            return "no warm-up declared: every run counted"
        return "warm-up excluded: " + "; ".join(parts)

    @property
    def warmup_texts(self) -> list[str]:
        return [d.warmup_text for d in self.labels]

    @property
    def method_text(self) -> str:
        """One paragraph naming every statistical procedure used (for every output)."""
        conf = f"{self.confidence:.0%}"
        return (
            f"Means with the Student t {conf} CI (mean ± t·s/√n). Median and p95 with BCa "
            f"bootstrap {conf} CIs (scipy.stats.bootstrap, {N_RESAMPLES} resamples, fixed "
            f"seed). Against the baseline: difference and ratio of medians with BCa bootstrap "
            f"{conf} CIs; test: {TEST_NAME}, α = {self.alpha:g}; verdict 'faster'/'slower' "
            f"needs p < α and a median change of at least {self.min_effect:.0%} and "
            f"{self.min_effect_ms:g} ms, else '~'. "
            "p-values are not corrected for multiple comparisons."
        )


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


OVERLAP_NS = 10_000  # 10 µs: clock granularity and hook latency, not an overlap


def _overlapping(phases: dict[str, Any], names: tuple[str, ...]) -> list[tuple[str, str]]:
    """Pairs (a, b) of `names` (in that order) whose spans in `phases` overlap > OVERLAP_NS."""
    spans = [
        (n, phases[n]["start_ns"], phases[n]["end_ns"]) for n in names
        if isinstance(phases.get(n), dict) and isinstance(phases[n].get("start_ns"), int)
        and isinstance(phases[n].get("end_ns"), int)
    ]
    return [
        (a, b)
        for i, (a, a0, a1) in enumerate(spans)
        for b, b0, b1 in spans[i + 1 :]
        if min(a1, b1) - max(a0, b0) > OVERLAP_NS
    ]


def warmup_runs_of(manifest: dict[str, Any], where: str) -> int:
    """`campaign.warmup_runs` of a manifest (absent = 0).

    Raises VimprofError when it is present but not a non-negative integer.
    """
    value = (manifest.get("campaign") or {}).get("warmup_runs", 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise VimprofError(
            f"{where}: campaign.warmup_runs must be a non-negative integer, got {value!r}; "
            "fix manifest.json"
        )
    return value


def _is_warmup(run: Any, warmup_runs: int) -> bool:
    return warmup_runs > 0 and isinstance(run, int) and run < warmup_runs


def load_label(run: RunDir) -> LabelData:
    """Read `run`'s timelines.jsonl, requests.jsonl, hooks.jsonl and manifest.json.

    Raises VimprofError when timelines.jsonl is missing or holds no record, when a record has
    no known `vim`, when records of one run disagree on the VIM, or when the manifest's
    warm-up rule is not a non-negative integer.
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
    manifest = run.manifest()
    warmup = warmup_runs_of(manifest, f"{run.path}/manifest.json")
    data = LabelData(run=run, vim=vim, warmup_runs=warmup, manifest=manifest)
    model = data.model
    for rec in records:
        phases = rec.get("phases") or {}
        ms: dict[str, float] = {}
        for name, phase in phases.items():
            if isinstance(phase, dict) and (v := _phase_ms(phase)) is not None:
                ms[name] = v
        if model.total not in ms:
            total = _derived_total_ms(phases, model)
            if total is not None:
                ms[model.total] = total
                data.derived_total += 1
        inst = Instance(
            run=rec.get("run"),
            instance=str(rec.get("instance", "")),
            job=str(rec.get("job", "")),
            complete=rec.get("complete") is not False,
            warmup=_is_warmup(rec.get("run"), warmup),
            ms=ms,
            record=rec,
        )
        data.all_instances.append(inst)
        if inst.warmup:
            data.warmup_excluded += 1
            continue
        data.instances += 1
        data.incomplete += not inst.complete
        for issue in rec.get("issues") or ():
            phase, sep, why = str(issue).partition(" not measured: ")
            if sep and phase not in data.not_measured:
                data.not_measured[phase] = why
        for pair in _overlapping(phases, model.breakdown):
            data.breakdown_overlaps[pair] = data.breakdown_overlaps.get(pair, 0) + 1
        for name, v in ms.items():
            data.durations_ms.setdefault(name, []).append(v)
    for req in run.read(REQUESTS):
        data.request_records.append(req)
        if _is_warmup(req.get("run"), warmup):
            continue
        data.requests += 1
        if req.get("ok") is False:
            data.failures += 1
            data.failed_runs.add(req.get("run"))
    for hook in run.read(HOOKS):
        if hook.get("probe") != "floor" or hook.get("hook") != "spawn":
            continue
        t, end = hook.get("t_ns"), hook.get("end_ns")
        if not isinstance(t, int) or not isinstance(end, int) or end < t:
            continue
        wu = _is_warmup(hook.get("run"), warmup)
        data.floor_runs.append((hook.get("run"), (end - t) / 1e6, wu))
        if not wu:
            data.floor_ms.append((end - t) / 1e6)
    return data


def _phase_order(model: PhaseModel, labels: list[LabelData]) -> list[str]:
    """Stack phases, breakdown phases seen, other phases in first-seen order, floor, total."""
    seen = {p for d in labels for p in d.durations_ms}
    order = list(model.stack)
    order += [p for p in model.breakdown if p in seen and p not in order]
    for d in labels:
        for p in d.durations_ms:
            if p not in order and p != model.total:
                order.append(p)
    if any(d.floor_ms or d.floor_runs for d in labels):
        order.append(FLOOR_PHASE)
    order.append(model.total)
    return order


def _ratio(value: float, base: float) -> float:
    if math.isnan(value) or math.isnan(base) or base == 0:
        return math.nan
    return value / base


def _median_delta(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(b, axis=axis) - np.median(a, axis=axis)


def _median_ratio(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.median(b, axis=axis) / np.median(a, axis=axis)


def mann_whitney(base: np.ndarray, other: np.ndarray) -> tuple[float, str]:
    """Two-sided Mann-Whitney U p-value and the method: 'exact' without ties and both n <= 100,
    else 'asymptotic' (normal approximation, tie and continuity corrected). NaN, '' if n < 2.
    """
    if len(base) < 2 or len(other) < 2:
        return NAN, ""
    both = np.concatenate([base, other])
    exact = len(np.unique(both)) == len(both) and max(len(base), len(other)) <= 100
    method = "exact" if exact else "asymptotic"
    res = _sp.mannwhitneyu(other, base, alternative="two-sided", method=method)
    return float(res.pvalue), method


def min_attainable_p(n1: int, n2: int) -> float:
    """The smallest two-sided exact Mann-Whitney p-value for sizes n1, n2: 2 / C(n1+n2, n1)."""
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def diff(
    base: Iterable[float],
    other: Iterable[float],
    base_label: str,
    alpha: float = 0.05,
    min_effect: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES,
    min_effect_ms: float = 1.0,
) -> Diff:
    """Compare one phase's durations (ms) of a label with the baseline's; see module doc."""
    a = np.asarray(list(base), dtype=float)
    b = np.asarray(list(other), dtype=float)
    mb = float(np.median(a)) if a.size else NAN
    mo = float(np.median(b)) if b.size else NAN
    delta = mo - mb
    ratio = _ratio(mo, mb)
    delta_ci: tuple[float, float] = (NAN, NAN)
    ratio_ci: tuple[float, float] = (NAN, NAN)
    if n_resamples > 0 and a.size >= 3 and b.size >= 3:
        delta_ci, _ = bootstrap_ci((a, b), _median_delta, confidence, n_resamples)
        if mb > 0 and np.all(a > 0):
            ratio_ci, _ = bootstrap_ci((a, b), _median_ratio, confidence, n_resamples)
    p, method = mann_whitney(a, b)
    verdict, note = SAME, ""
    if a.size == 0 or b.size == 0:
        note = (f"not measured in the baseline (this label has {b.size})" if a.size == 0
                else f"not measured in this label (the baseline has {a.size})")
    elif math.isnan(p):
        note = f"n={a.size} vs {b.size}: too few runs to test"
    elif p < alpha:
        if math.isnan(ratio):
            note = "significant, but the baseline median is 0: no relative effect"
        elif abs(ratio - 1.0) < min_effect:
            note = (
                f"significant (p={p:.3g}) but the median moved {abs(ratio - 1):.1%} "
                f"< {min_effect:.0%} minimum effect"
            )
        elif abs(delta) < min_effect_ms:
            note = (
                f"significant (p={p:.3g}) but the median moved {abs(delta):.3g} ms "
                f"< {min_effect_ms:g} ms minimum effect"
            )
        else:
            verdict = SLOWER if ratio > 1.0 else FASTER
    elif min_attainable_p(a.size, b.size) >= alpha:
        note = (
            f"n={a.size} vs {b.size}: the smallest possible p is "
            f"{min_attainable_p(a.size, b.size):.3g} >= α={alpha:g}; record more runs"
        )
    return Diff(
        base_label=base_label,
        n_base=int(a.size),
        n=int(b.size),
        median_base_ms=mb,
        median_ms=mo,
        delta_ms=delta,
        delta_ci_ms=delta_ci,
        ratio=ratio,
        ratio_ci=ratio_ci,
        p_value=p,
        method=method,
        verdict=verdict,
        note=note,
    )


def _values(d: LabelData, phase: str) -> list[float]:
    return d.floor_ms if phase == FLOOR_PHASE else d.durations_ms.get(phase, [])


def compare(
    runs: list[RunDir],
    confidence: float = 0.95,
    alpha: float = 0.05,
    min_effect: float = 0.05,
    n_resamples: int = N_RESAMPLES,
    min_effect_ms: float = 1.0,
) -> Comparison:
    """Per-phase statistics of each run and diffs against runs[0] (the baseline).

    `alpha`: significance level of the test; `min_effect`: smallest relative change of the
    median that earns a verdict (0.05 = 5%), `min_effect_ms` the smallest absolute one (ms);
    `n_resamples`: bootstrap resamples (0 = no
    bootstrap CIs). Raises VimprofError for no runs, two runs with the same label, runs of
    different VIMs, or options out of range.
    """
    if not runs:
        raise VimprofError("nothing to compare: give one or more run directories")
    if not 0.0 < alpha < 1.0:
        raise VimprofError(f"--alpha must be in (0, 1), got {alpha!r}")
    if min_effect < 0.0:
        raise VimprofError(f"--min-effect must be >= 0, got {min_effect!r}")
    if min_effect_ms < 0.0:
        raise VimprofError(f"--min-effect-ms must be >= 0, got {min_effect_ms!r}")
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
            values = _values(d, phase)
            st = phase_stats(values, phase, confidence, d.failures_for(phase), n_resamples)
            dif = None
            if base is None:
                base = st
            else:
                dif = diff(
                    _values(labels[0], phase), values, labels[0].label, alpha, min_effect,
                    confidence, n_resamples, min_effect_ms,
                )
            rows.append(PhaseRow(phase, d.label, st, _ratio(st.median_ms, base.median_ms), dif))
    cmp = Comparison(
        model=model,
        labels=labels,
        phases=phases,
        rows=rows,
        confidence=confidence,
        alpha=alpha,
        min_effect=min_effect,
        min_effect_ms=min_effect_ms,
    )
    return cmp


@dataclass(frozen=True)
class Gate:
    """`--fail-if-slower PHASE:PCT`: fail when PHASE is significantly slower by more than PCT%."""

    phase: str
    pct: float

    @classmethod
    def parse(cls, text: str) -> Gate:
        """'instantiation:10' -> Gate('instantiation', 10.0); VimprofError if malformed."""
        phase, sep, pct = text.rpartition(":")
        try:
            value = float(pct)
        except ValueError:
            value = NAN
        if not sep or not phase or not math.isfinite(value) or value < 0:
            raise VimprofError(
                f"--fail-if-slower {text!r}: expected PHASE:PCT with PCT >= 0, "
                "e.g. --fail-if-slower total:5"
            )
        return cls(phase, value)


def gate_failures(cmp: Comparison, gates: Iterable[Gate]) -> list[str]:
    """One message per (gate, label) where the phase is significantly slower than baseline
    (Mann-Whitney p < alpha) AND its median is more than `pct`% above the baseline's.

    Raises VimprofError for a gate on a phase no label has.
    """
    out = []
    for g in gates:
        if g.phase not in cmp.phases:
            raise VimprofError(
                f"--fail-if-slower {g.phase}:{g.pct:g}: no phase {g.phase!r} in these runs "
                f"(phases: {', '.join(cmp.phases)})"
            )
        for r in cmp.rows:
            d = r.diff
            if r.phase != g.phase or d is None or math.isnan(d.p_value):
                continue
            if d.p_value < cmp.alpha and d.change_pct > g.pct:
                out.append(
                    f"{g.phase}: {r.label} is slower than {d.base_label} by "
                    f"{d.change_pct:+.1f}% (median {d.median_base_ms:.1f} -> "
                    f"{d.median_ms:.1f} ms, {TEST_NAME} p={d.p_value:.3g} < {cmp.alpha:g}), "
                    f"over the {g.pct:g}% limit"
                )
    return out
