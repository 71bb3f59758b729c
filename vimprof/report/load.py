"""Load curves: how the phases, the throughput and the generator behave as the offered load
rises, per variant (stock and tuned side by side), and where the variant's knee is.

    report = load_levels({"stock": [RunDir(p1), RunDir(p4)], "tuned": [RunDir(t1), RunDir(t4)]})
    write_load_report(report, out_dir, console)

A variant is a list of run directories, one per load level (an open-loop campaign at one
arrival rate: `vimprof capture --arrival poisson:R`). Per level, from the run directory:

- offered rate (requests/s): the manifest's `load.offered_rate_rps` (the open-loop engine's
  (n - 1) / span of the intended send instants of the requests it sent), else (n - 1) / span
  of requests.jsonl `t_intended_ns`. The level's x position in every chart.
- achieved rate: `load.achieved_rate_rps` (the same over the actual send instants), else from
  `t_sent_ns`. It differs from the offered rate only when the generator could not keep up.
- throughput (instances ready per second): the number of requests that reached running
  (`ok` true with a `t_running_ns`) divided by the campaign's span from the first request's
  `t_submit_ns` to the last `t_running_ns`, every request counted (warm-up included: the
  generator sent them on the same schedule). Over a short campaign it is biased: the span ends
  with the last instance's latency, and it counts n requests where the rates count n - 1
  intervals; both biases shrink as the campaign gets longer.
- peak in flight (`load.peak_in_flight`, else the largest `in_flight` of requests.jsonl) and
  the send lag's p99 and max (report.validity.lag_summary).
- per phase: median and p95 with their BCa bootstrap CIs (report.stats.phase_stats over the
  counted instances, warm-up excluded, as `vimprof compare` computes them).
- validity flags (report.validity) and the hosts' CPU and memory when the run directory has
  host-load.jsonl ("not sampled" otherwise).

Knee. Levels are ordered by offered rate. A level KEEPS UP when its achieved rate is within
KEEP_UP (5%) of its offered rate (|achieved / offered - 1| <= 0.05) and its throughput is at
least 95% of the offered rate (throughput above the offered rate is no saturation). Its p95 is
STABLE when it is the lowest level, or when the `total` p95 rose by at most P95_RISE (10%)
over the previous level's p95, or when the two p95 BCa CIs overlap (a rise the CIs cannot tell
from noise). The knee is the highest level of the leading run of levels that keep up with a
stable p95: the last level before the first one that fails (the issue's "highest offered rate
whose achieved rate is within 5% of it and whose p95 is stable", read so that a lucky level
above a failing one does not move the knee). When every level qualifies, the knee is the
highest level measured and `bent` is False: the curve did not bend within the levels measured,
the true knee is at or beyond it. None when the lowest level already fails.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from rich import box
from rich.console import Console
from rich.table import Table

from vimprof import __version__
from vimprof.errors import VimprofError
from vimprof.report import chart
from vimprof.report.compare import FLOOR_PHASE, LabelData, _phase_order, _values, load_label
from vimprof.report.render import fmt_ms, fmt_pair
from vimprof.report.stats import N_RESAMPLES, PhaseStats, phase_stats
from vimprof.report.validity import (
    LAG_P99_MS,
    Flag,
    host_load_summary,
    lag_summary,
    not_checked,
    validity,
)
from vimprof.rundir import RunDir

KEEP_UP = 0.05
P95_RISE = 0.10
SWEEP_JSON = "sweep.json"
SWEEP_SCHEMA = "vimprof-sweep/1"

LOAD_MD = "load.md"
LOAD_JSON = "load.json"
PHASES_PNG = "load-phases.png"
TOTAL_PNG = "load-total.png"
THROUGHPUT_PNG = "load-throughput.png"
LAG_PNG = "load-lag.png"

NAN = float("nan")

KNEE_RULE = (
    f"knee: the highest level of the leading run of levels (by offered rate) that keep up "
    f"(achieved rate within {KEEP_UP:.0%} of the offered rate and throughput at least "
    f"{1 - KEEP_UP:.0%} of it) with a stable p95 (the lowest level; or total p95 at most "
    f"{P95_RISE:.0%} above the previous level's; or the two p95 BCa CIs overlap)"
)
THROUGHPUT_RULE = (
    "throughput: requests that reached running / (last t_running - first t_submit), every "
    "request of the campaign (warm-up included)"
)


@dataclass
class Level:
    """One load level of a variant: one run directory; rates in requests/s, lags in ms."""

    variant: str
    run: RunDir
    level: str  # the arrival spec (or the sweep's level name)
    offered_rps: float
    achieved_rps: float
    throughput_rps: float
    ready: int  # requests that reached running
    requests: int
    span_s: float
    peak_in_flight: int | None
    lag_p99_ms: float
    lag_max_ms: float
    stopped_reason: str | None
    stats: dict[str, PhaseStats]
    flags: list[Flag]
    unchecked: list[str]
    host_load: dict[str, dict[str, float]] | None
    keeps_up: bool = False
    p95_stable: bool = False
    why: str = ""  # why the level does not qualify for the knee ("" when it does)

    @property
    def label(self) -> str:
        return self.run.label

    @property
    def qualifies(self) -> bool:
        return self.keeps_up and self.p95_stable


@dataclass
class Variant:
    name: str
    levels: list[Level]
    knee: Level | None = None
    bent: bool = False  # a level above the knee failed

    @property
    def knee_text(self) -> str:
        if self.knee is None:
            first = self.levels[0]
            return f"{self.name}: no knee: the lowest level ({first.level}) fails: {first.why}"
        k = self.knee
        text = (f"{self.name}: knee at {k.offered_rps:.2f} req/s offered ({k.level}, "
                f"{k.label}): throughput {k.throughput_rps:.2f}/s, total p95 "
                f"{fmt_ms(k.stats[TOTAL].p95_ms)} ms")
        if k.flags:
            text += f" (this level's validity flags: {', '.join(f.code for f in k.flags)})"
        if not self.bent:
            return text + "; every level qualifies: the knee is at or beyond the highest level"
        nxt = self.levels[self.levels.index(k) + 1]
        return text + f"; the next level ({nxt.offered_rps:.2f} req/s) fails: {nxt.why}"


TOTAL = "total"


@dataclass
class LoadReport:
    variants: list[Variant]
    phases: list[str]
    vim: str
    confidence: float = 0.95
    notes: list[str] = field(default_factory=list)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def as_json(self) -> dict[str, Any]:
        return {
            "vimprof_version": __version__,
            "vim": self.vim,
            "confidence": self.confidence,
            "definitions": {"throughput": THROUGHPUT_RULE, "knee": KNEE_RULE,
                            "keep_up": KEEP_UP, "p95_rise": P95_RISE},
            "phases": self.phases,
            "variants": [
                {
                    "name": v.name,
                    "knee": None if v.knee is None else {
                        "label": v.knee.label, "level": v.knee.level,
                        "offered_rps": _num(v.knee.offered_rps),
                        "throughput_rps": _num(v.knee.throughput_rps),
                        "bent": v.bent,
                    },
                    "knee_text": v.knee_text,
                    "levels": [_level_json(lv) for lv in v.levels],
                }
                for v in self.variants
            ],
            "notes": self.notes,
        }


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _pair(p: tuple[float, float]) -> list[float | None]:
    return [_num(p[0]), _num(p[1])]


def _level_json(lv: Level) -> dict[str, Any]:
    return {
        "label": lv.label, "run_dir": str(lv.run.path), "level": lv.level,
        "offered_rps": _num(lv.offered_rps), "achieved_rps": _num(lv.achieved_rps),
        "throughput_rps": _num(lv.throughput_rps), "ready": lv.ready,
        "requests": lv.requests, "span_s": _num(lv.span_s),
        "peak_in_flight": lv.peak_in_flight, "lag_p99_ms": _num(lv.lag_p99_ms),
        "lag_max_ms": _num(lv.lag_max_ms), "stopped_reason": lv.stopped_reason,
        "keeps_up": lv.keeps_up, "p95_stable": lv.p95_stable, "qualifies": lv.qualifies,
        "why": lv.why,
        "phases": {
            p: {"n": s.n, "median_ms": _num(s.median_ms), "median_ci_ms": _pair(s.median_ci_ms),
                "p95_ms": _num(s.p95_ms), "p95_ci_ms": _pair(s.p95_ci_ms)}
            for p, s in lv.stats.items()
        },
        "validity": [f.as_dict() for f in lv.flags],
        "not_checked": lv.unchecked,
        "host_load": lv.host_load if lv.host_load is not None else "not sampled",
    }


def _ints(records: list[dict[str, Any]], key: str) -> list[int]:
    return [r[key] for r in records if isinstance(r.get(key), int)
            and not isinstance(r.get(key), bool)]


def _rate(instants: list[int]) -> float:
    """(n - 1) / span of the instants (s), NaN for fewer than 2 or a zero span."""
    if len(instants) < 2 or max(instants) == min(instants):
        return NAN
    return (len(instants) - 1) / ((max(instants) - min(instants)) / 1e9)


def throughput(requests: list[dict[str, Any]]) -> tuple[float, int, float]:
    """(instances ready per second, how many, span s) of requests.jsonl records; see the
    module doc. NaN rate when no request reached running or the span is not positive."""
    ready = [r for r in requests if r.get("ok") is True and isinstance(r.get("t_running_ns"), int)]
    submits = _ints(requests, "t_submit_ns")
    if not ready or not submits:
        return NAN, len(ready), NAN
    span = (max(r["t_running_ns"] for r in ready) - min(submits)) / 1e9
    return (len(ready) / span if span > 0 else NAN), len(ready), span


def _level(variant: str, d: LabelData, level: str | None, phases: list[str],
           confidence: float, n_resamples: int) -> Level:
    m = d.manifest
    load = m.get("load") if isinstance(m.get("load"), dict) else {}
    reqs = d.request_records
    offered = load.get("offered_rate_rps")
    if not isinstance(offered, (int, float)):
        offered = _rate(_ints(reqs, "t_intended_ns"))
    achieved = load.get("achieved_rate_rps")
    if not isinstance(achieved, (int, float)):
        achieved = _rate(_ints(reqs, "t_sent_ns"))
    if not math.isfinite(offered):
        raise VimprofError(f"{d.run.path}: no offered rate (no load summary in manifest.json "
                           "and fewer than 2 requests with t_intended_ns): not a load level")
    thr, ready, span = throughput(reqs)
    peak = load.get("peak_in_flight")
    if not isinstance(peak, int):
        flights = _ints(reqs, "in_flight")
        peak = max(flights) if flights else None
    lag = lag_summary(d) or {"p99": NAN, "max": NAN}
    spec = level or str(((m.get("campaign") or {}).get("arrival") or {}).get("spec") or d.label)
    stats = {
        p: phase_stats(_values(d, p), p, confidence, d.failures_for(p), n_resamples)
        for p in phases
    }
    return Level(
        variant=variant, run=d.run, level=spec, offered_rps=float(offered),
        achieved_rps=float(achieved), throughput_rps=thr, ready=ready, requests=len(reqs),
        span_s=span, peak_in_flight=peak, lag_p99_ms=lag["p99"], lag_max_ms=lag["max"],
        stopped_reason=load.get("stopped_reason"), stats=stats,
        flags=validity(d, confidence=confidence), unchecked=not_checked(d),
        host_load=host_load_summary(d.run),
    )


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    if any(math.isnan(v) for v in (*a, *b)):
        return False
    return max(a[0], b[0]) <= min(a[1], b[1])


def judge(levels: list[Level]) -> tuple[Level | None, bool]:
    """Set keeps_up, p95_stable and why on each level (ordered by offered rate); return
    (knee, bent) by the rule of the module doc."""
    prev: Level | None = None
    for lv in levels:
        why = []
        ach = lv.achieved_rps / lv.offered_rps - 1.0 if lv.offered_rps > 0 else NAN
        lv.keeps_up = (math.isfinite(ach) and abs(ach) <= KEEP_UP
                       and math.isfinite(lv.throughput_rps)
                       and lv.throughput_rps >= (1.0 - KEEP_UP) * lv.offered_rps)
        if not (math.isfinite(ach) and abs(ach) <= KEEP_UP):
            why.append(f"achieved {lv.achieved_rps:.2f} vs offered {lv.offered_rps:.2f} req/s "
                       f"({ach:+.1%})")
        elif not lv.keeps_up:
            why.append(f"throughput {lv.throughput_rps:.2f}/s < {1 - KEEP_UP:.0%} of offered "
                       f"{lv.offered_rps:.2f} req/s")
        cur = lv.stats[TOTAL]
        if prev is None:
            lv.p95_stable = True
        else:
            old = prev.stats[TOTAL]
            rise = cur.p95_ms / old.p95_ms - 1.0 if old.p95_ms > 0 else NAN
            lv.p95_stable = (math.isfinite(rise) and rise <= P95_RISE) or _overlap(
                cur.p95_ci_ms, old.p95_ci_ms)
            if not lv.p95_stable:
                why.append(f"total p95 {fmt_ms(cur.p95_ms)} ms [{fmt_pair(cur.p95_ci_ms)}] is "
                           f"{rise:+.0%} over the previous level's {fmt_ms(old.p95_ms)} ms "
                           f"[{fmt_pair(old.p95_ci_ms)}], CIs apart")
        lv.why = "; ".join(why)
        prev = lv
    knee = None
    for lv in levels:
        if not lv.qualifies:
            return knee, knee is not None
        knee = lv
    return knee, False


def load_levels(
    groups: dict[str, list[RunDir]], *, confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES, levels: dict[str, list[str | None]] | None = None,
) -> LoadReport:
    """The load report of `groups` (variant name -> the run directories of its levels).

    `levels` optionally names each run's level (same shape; default: the arrival spec of its
    manifest). Raises VimprofError for no variant, an empty variant, a run without timelines
    (as compare.load_label), runs of different VIMs, or a run without an offered rate.
    """
    if not groups or any(not runs for runs in groups.values()):
        raise VimprofError("curves needs at least one variant with at least one run directory")
    datas = {name: [load_label(r) for r in runs] for name, runs in groups.items()}
    every = [d for ds in datas.values() for d in ds]
    vims = {d.vim for d in every}
    if len(vims) != 1:
        raise VimprofError(f"curves mixes VIMs ({', '.join(sorted(vims))}): one VIM per report")
    model = every[0].model
    phases = [p for p in _phase_order(model, every) if p != FLOOR_PHASE or any(
        d.floor_ms for d in every)]
    out = []
    for name, ds in datas.items():
        names = (levels or {}).get(name) or [None] * len(ds)
        lvls = [_level(name, d, lv, phases, confidence, n_resamples)
                for d, lv in zip(ds, names, strict=True)]
        lvls.sort(key=lambda lv: lv.offered_rps)
        knee, bent = judge(lvls)
        out.append(Variant(name, lvls, knee, bent))
    notes = []
    if all(lv.host_load is None for v in out for lv in v.levels):
        notes.append("hosts' CPU and memory: not sampled (no host-load.jsonl in any run)")
    return LoadReport(out, phases, model.vim, confidence, notes)


# ---------------------------------------------------------------- grouping (CLI helpers)


def variant_of(run: RunDir) -> str:
    """A variant name from the manifest: 'VIMVARIANT/DRIVER:DRIVERVARIANT' (stock/qemu:builtin)."""
    m = run.manifest()
    vim = (m.get("vim") or {}).get("variant") or "?"
    drv = m.get("driver") or {}
    name = drv.get("name") or (m.get("campaign") or {}).get("driver") or "?"
    var = drv.get("variant")
    return f"{vim}/{name}" + (f":{var}" if var else "")


def group_by_manifest(runs: list[RunDir]) -> dict[str, list[RunDir]]:
    out: dict[str, list[RunDir]] = {}
    for r in runs:
        out.setdefault(variant_of(r), []).append(r)
    return out


def read_sweep(sweep_dir: Path) -> tuple[dict[str, list[RunDir]], dict[str, list[str | None]]]:
    """The variants of a sweep directory's sweep.json ({"schema": "vimprof-sweep/1",
    "variants": {name: [{"level": spec, "index": i, "run": "<dir under the sweep dir>"}]}}),
    runs ordered by index; and the level names. Raises VimprofError for a malformed file or a
    missing run directory."""
    path = Path(sweep_dir) / SWEEP_JSON
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise VimprofError(f"{path}: cannot read the sweep: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("schema") != SWEEP_SCHEMA:
        raise VimprofError(f"{path}: not a {SWEEP_SCHEMA} file (schema "
                           f"{doc.get('schema') if isinstance(doc, dict) else None!r})")
    variants = doc.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise VimprofError(f"{path}: no variants")
    groups: dict[str, list[RunDir]] = {}
    names: dict[str, list[str | None]] = {}
    for name, entries in variants.items():
        if not isinstance(entries, list) or not entries:
            raise VimprofError(f"{path}: variant {name!r} has no level")
        ordered = sorted(entries, key=lambda e: e.get("index", 0) if isinstance(e, dict) else 0)
        for e in ordered:
            if not isinstance(e, dict) or not isinstance(e.get("run"), str):
                raise VimprofError(f"{path}: variant {name!r}: a level without \"run\": {e!r}")
            rd = Path(sweep_dir) / e["run"]
            if not rd.is_dir():
                raise VimprofError(f"{path}: variant {name!r}: no run directory {rd}")
            groups.setdefault(name, []).append(RunDir(rd))
            lvl = e.get("level")
            names.setdefault(name, []).append(None if lvl is None else str(lvl))
    return groups, names


# ---------------------------------------------------------------- output


def _colors() -> list[str]:
    return [f"C{i}" for i in range(10)]


def _ci_bars(ax, xs, cis, color) -> None:
    pts = [(x, lo, hi) for x, (lo, hi) in zip(xs, cis, strict=True)
           if math.isfinite(lo) and math.isfinite(hi)]
    if pts:
        x, lo, hi = zip(*pts, strict=True)
        ax.vlines(x, lo, hi, color=color, linewidth=1.2, alpha=0.8)


def _quantile_lines(ax, report: LoadReport, phase: str, xkey: str) -> None:
    for k, v in enumerate(report.variants):
        c = _colors()[k % 10]
        lv = [lv for lv in v.levels if lv.stats[phase].n > 0]
        xs = [float(getattr(x, xkey)) if getattr(x, xkey) is not None else NAN for x in lv]
        if not lv:
            continue
        for stat, style in (("median", "o-"), ("p95", "s--")):
            ys = [getattr(x.stats[phase], f"{stat}_ms") for x in lv]
            ax.plot(xs, ys, style, color=c, markersize=4, linewidth=1.2,
                    label=f"{v.name} {stat}")
            _ci_bars(ax, xs, [getattr(x.stats[phase], f"{stat}_ci_ms") for x in lv], c)


def draw_phases(report: LoadReport) -> Figure:
    """Per phase: median (solid) and p95 (dashed) against offered rate, one colour per
    variant, vertical bars = their BCa CIs."""
    phases = [p for p in report.phases
              if any(lv.stats[p].n > 0 for v in report.variants for lv in v.levels)]
    cols = min(3, max(1, len(phases)))
    rows = math.ceil(len(phases) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, phase in zip(axes, phases, strict=False):
        _quantile_lines(ax, report, phase, "offered_rps")
        ax.set_title(phase, fontsize=10)
        ax.set_xlabel("offered rate (req/s)")
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3)
    for ax in axes[len(phases):]:
        ax.set_visible(False)
    h, lab = axes[0].get_legend_handles_labels()
    if h:
        fig.legend(h, lab, loc="outside lower center", ncol=min(4, len(h)), frameon=False,
                   fontsize=9)
    fig.suptitle(f"{report.vim}: phase median and p95 against offered rate "
                 f"(bars: {report.confidence:.0%} BCa CIs)", fontsize=11)
    return fig


def draw_total(report: LoadReport) -> Figure:
    """Total median and p95 against the achieved rate and against the peak in-flight count."""
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, xl in ((axes[0], "achieved_rps", "achieved rate (req/s)"),
                        (axes[1], "peak_in_flight", "peak in flight")):
        _quantile_lines(ax, report, TOTAL, key)
        ax.set_title(f"{TOTAL} against {xl.split(' (')[0]}", fontsize=10)
        ax.set_xlabel(xl)
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{report.vim}: total latency against achieved rate and in-flight count",
                 fontsize=11)
    return fig


def draw_throughput(report: LoadReport) -> Figure:
    """Throughput against offered rate, the y = x line, each variant's knee as a star."""
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    top = max([lv.offered_rps for v in report.variants for lv in v.levels]
              + [lv.throughput_rps for v in report.variants for lv in v.levels
                 if math.isfinite(lv.throughput_rps)])
    ax.plot([0.0, top * 1.1], [0.0, top * 1.1], ":", color="grey", label="y = x")
    for k, v in enumerate(report.variants):
        c = _colors()[k % 10]
        ax.plot([lv.offered_rps for lv in v.levels], [lv.throughput_rps for lv in v.levels],
                "o-", color=c, label=v.name)
        if v.knee is not None:
            ax.plot([v.knee.offered_rps], [v.knee.throughput_rps], "*", color=c,
                    markersize=16, markeredgecolor="black", linestyle="none",
                    label=f"{v.name} knee" + ("" if v.bent else " (≥, no bend seen)"))
    ax.set_xlabel("offered rate (req/s)")
    ax.set_ylabel("throughput (instances ready/s)")
    ax.set_title("throughput against offered rate", fontsize=10)
    ax.set_xlim(0, top * 1.1)
    ax.set_ylim(0, top * 1.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def draw_lag(report: LoadReport) -> Figure:
    """The generator's send lag p99 against offered rate, with the validity tolerance."""
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for k, v in enumerate(report.variants):
        ax.plot([lv.offered_rps for lv in v.levels], [lv.lag_p99_ms for lv in v.levels], "o-",
                color=_colors()[k % 10], label=v.name)
    ax.axhline(LAG_P99_MS, color="red", linestyle="--", linewidth=1,
               label=f"tolerance {LAG_P99_MS:g} ms")
    ax.set_xlabel("offered rate (req/s)")
    ax.set_ylabel("send lag p99 (ms)")
    ax.set_title("load generator: send lag p99 against offered rate", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def figures(report: LoadReport) -> dict[str, tuple[str, Figure]]:
    return {
        "phases": (PHASES_PNG, draw_phases(report)),
        "total": (TOTAL_PNG, draw_total(report)),
        "throughput": (THROUGHPUT_PNG, draw_throughput(report)),
        "lag": (LAG_PNG, draw_lag(report)),
    }


def _med_ci(s: PhaseStats, q: str) -> str:
    v, ci = getattr(s, f"{q}_ms"), getattr(s, f"{q}_ci_ms")
    pair = fmt_pair(ci)
    return fmt_ms(v) + ("" if pair == "-" else f" [{pair}]")


def _f(v: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if v is None or not math.isfinite(v) else fmt.format(v)


LEVEL_COLUMNS = ("level", "run", "offered", "achieved", "throughput", "in-flight peak",
                 "lag p99 ms", "total median [CI]", "total p95 [CI]", "knee?", "validity")


def level_cells(lv: Level, knee: Level | None) -> list[str]:
    return [
        lv.level, lv.label, _f(lv.offered_rps), _f(lv.achieved_rps), _f(lv.throughput_rps),
        "-" if lv.peak_in_flight is None else str(lv.peak_in_flight), _f(lv.lag_p99_ms, "{:.1f}"),
        _med_ci(lv.stats[TOTAL], "median"), _med_ci(lv.stats[TOTAL], "p95"),
        "knee" if lv is knee else ("ok" if lv.qualifies else "no"),
        ", ".join(f.code for f in lv.flags) or "-",
    ]


def render(report: LoadReport, console: Console) -> None:
    """Print one table per variant, its knee, and the levels' validity flags."""
    for v in report.variants:
        t = Table(title=f"{report.vim} {v.name}: load levels (rates req/s, ms)",
                  box=box.SIMPLE_HEAD, pad_edge=False)
        for i, col in enumerate(LEVEL_COLUMNS):
            t.add_column(col, justify="left" if i < 2 or i == len(LEVEL_COLUMNS) - 1
                         else "right", overflow="fold")
        for lv in v.levels:
            t.add_row(*level_cells(lv, v.knee))
        console.print(t)
        console.print(v.knee_text, soft_wrap=False)
        for lv in v.levels:
            for f in lv.flags:
                console.print(f"  {lv.label}: {f}", soft_wrap=False)
    console.print(KNEE_RULE, soft_wrap=False)
    console.print(THROUGHPUT_RULE, soft_wrap=False)
    for n in report.notes:
        console.print(n, soft_wrap=False)


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def markdown(report: LoadReport, charts: dict[str, str]) -> str:
    conf = f"{report.confidence:.0%}"
    out = [f"# vimprof curves: {', '.join(_md(v.name) for v in report.variants)}", "",
           f"VIM: {report.vim}. Rates in requests/s, durations in ms; medians and p95 with "
           f"BCa bootstrap {conf} CIs (report.stats), warm-up runs excluded from them.", "",
           "Definitions:", "", f"- {THROUGHPUT_RULE}.", f"- {KNEE_RULE}.",
           "- offered / achieved rate: the open-loop engine's (n - 1) / span of the intended / "
           "actual send instants (manifest `load`).", ""]
    for v in report.variants:
        out += [f"## {_md(v.name)}", "", f"{_md(v.knee_text)}.", ""]
        out += ["| " + " | ".join(LEVEL_COLUMNS) + " |",
                "|" + "|".join("---" if i < 2 else "---:" for i in range(len(LEVEL_COLUMNS)))
                + "|"]
        out += ["| " + " | ".join(_md(c) for c in level_cells(lv, v.knee)) + " |"
                for lv in v.levels]
        out += ["", "| level | phase | n | median | CI of median | p95 | CI of p95 |",
                "|---|---|---:|---:|---:|---:|---:|"]
        for lv in v.levels:
            for p, s in lv.stats.items():
                out.append(f"| {_md(lv.level)} | {p} | {s.n} | {fmt_ms(s.median_ms)} | "
                           f"{fmt_pair(s.median_ci_ms)} | {fmt_ms(s.p95_ms)} | "
                           f"{fmt_pair(s.p95_ci_ms)} |")
        out += ["", "Validity:", ""]
        for lv in v.levels:
            flags = [f"`{f.code}`: {_md(f.message)}" for f in lv.flags] or ["no flag"]
            out += [f"- {_md(lv.label)}: {x}" for x in flags]
            out += [f"- {_md(lv.label)}: {_md(x)}" for x in lv.unchecked]
            if lv.host_load is None:
                out.append(f"- {_md(lv.label)}: hosts' CPU and memory: not sampled")
            else:
                for h, s in lv.host_load.items():
                    out.append(f"- {_md(lv.label)}: host {_md(h)}: CPU p50 "
                               f"{_f(s.get('cpu_p50'), '{:.0f}')}%, p90 "
                               f"{_f(s.get('cpu_p90'), '{:.0f}')}%, memory max "
                               f"{_f(s.get('mem_max'), '{:.0f}')}% ({int(s['samples'])} samples)")
        out.append("")
    if report.notes:
        out += ["Notes:", ""] + [f"- {_md(n)}" for n in report.notes] + [""]
    titles = {"phases": "Phase median and p95 against offered rate",
              "total": "Total against achieved rate and in-flight count",
              "throughput": "Throughput against offered rate (knee starred)",
              "lag": "Generator send lag p99 against offered rate"}
    out += ["## Charts", ""]
    for key, name in charts.items():
        out += [f"### {titles.get(key, key)}", "", f"![{titles.get(key, key)}]({name})", ""]
    return "\n".join(out)


def write_load_report(report: LoadReport, out_dir: Path, console: Console) -> dict[str, str]:
    """Print the tables; write load.md, load.json and the charts (PNG) into `out_dir`.

    Returns {chart key: file name}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    render(report, console)
    names = {}
    for key, (name, fig) in figures(report).items():
        chart.save(fig, out_dir / name)
        names[key] = name
    (out_dir / LOAD_JSON).write_text(
        json.dumps(report.as_json(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (out_dir / LOAD_MD).write_text(markdown(report, names), encoding="utf-8")
    return names


__all__ = ["KEEP_UP", "LOAD_JSON", "LOAD_MD", "P95_RISE", "Level", "LoadReport", "Variant",
           "figures", "group_by_manifest", "judge", "load_levels", "read_sweep", "throughput",
           "variant_of", "write_load_report"]
