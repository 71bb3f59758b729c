"""Machine-readable outputs: summary.json, the per-run phases CSV and the Chrome trace.

phases.csv (long / "tidy" format: one row per instance x phase, so pandas
`pd.read_csv("phases.csv")` and R `read.csv("phases.csv")` give a data frame ready to group by
label and phase). Columns:

    label      run directory name (the label compared)
    run        0-based run index of the campaign (empty when unknown)
    instance   Nomad allocation id / Nova server id (empty for floor probes)
    job        Nomad job id / Nova request id (may be empty)
    phase      phase name (ARCHITECTURE.md "Units and names"), or "floor spawn"
    ms         duration in milliseconds
    start_ns   phase start, ns since the Unix epoch (empty when the record has none)
    end_ns     phase end, ns since the Unix epoch
    source     event source that bounds the phase (capture, vim, hook, client)
    complete   true/false: the instance's timeline is complete
    warmup     true/false: excluded from statistics as a declared warm-up run

trace.json: Chrome trace-event format ("traceEvents", the JSON Object Format), which Perfetto
(ui.perfetto.dev) and chrome://tracing open. One pid per label (process name = label), one tid
per instance (thread name = run index and instance id); each phase is a complete event
(ph "X", ts and dur in µs), each event an instant (ph "i", thread scope) with its attributes
as args. Phases that overlap without nesting (e.g. client_pickup across the start of
instantiation) go to an extra thread of the same instance, sorted right below it.
Timestamps are µs since the label's first instant (so labels line up at 0); the absolute
origin in ns is in each process's metadata args and in otherData.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

from vimprof import __version__
from vimprof.report.compare import FLOOR_PHASE, TEST_NAME, Comparison
from vimprof.report.plots import instance_events
from vimprof.report.stats import N_RESAMPLES

CSV_COLUMNS = (
    "label", "run", "instance", "job", "phase", "ms", "start_ns", "end_ns", "source",
    "complete", "warmup",
)


def _num(v: float) -> float | None:
    """JSON has no NaN: undefined numbers become null."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _pair(p: tuple[float, float]) -> list[float | None]:
    return [_num(p[0]), _num(p[1])]


def summary(cmp: Comparison, gate_messages: list[str] | None = None) -> dict[str, Any]:
    """The summary.json document (durations in ms, undefined numbers as null)."""
    stats = []
    for r in cmp.rows:
        s = r.stats
        stats.append({
            "phase": r.phase, "label": r.label, "n": s.n, "failures": s.failures,
            "mean_ms": _num(s.mean_ms), "sd_ms": _num(s.std_ms),
            "mean_ci_ms": _pair((s.ci_low_ms, s.ci_high_ms)),
            "median_ms": _num(s.median_ms), "median_ci_ms": _pair(s.median_ci_ms),
            "p90_ms": _num(s.p90_ms), "p95_ms": _num(s.p95_ms), "p95_ci_ms": _pair(s.p95_ci_ms),
            "p99_ms": _num(s.p99_ms), "min_ms": _num(s.min_ms), "max_ms": _num(s.max_ms),
            "note": s.note, "warnings": list(s.warnings),
        })
    diffs = []
    for r in cmp.rows:
        d = r.diff
        if d is None:
            continue
        diffs.append({
            "phase": r.phase, "label": r.label, "baseline": d.base_label,
            "n_baseline": d.n_base, "n": d.n,
            "median_baseline_ms": _num(d.median_base_ms), "median_ms": _num(d.median_ms),
            "delta_median_ms": _num(d.delta_ms), "delta_median_ci_ms": _pair(d.delta_ci_ms),
            "ratio_median": _num(d.ratio), "ratio_median_ci": _pair(d.ratio_ci),
            "change_pct": _num(d.change_pct), "p_value": _num(d.p_value),
            "test": TEST_NAME, "test_method": d.method, "verdict": d.verdict, "note": d.note,
        })
    return {
        "vimprof_version": __version__,
        "vim": cmp.model.vim,
        "baseline": cmp.baseline.label,
        "labels": [
            {
                "label": d.label, "run_dir": str(d.run.path), "instances": d.instances,
                "incomplete": d.incomplete, "requests": d.requests, "failures": d.failures,
                "warmup_runs": d.warmup_runs, "warmup_excluded": d.warmup_excluded,
                "warmup": d.warmup_text, "campaign": d.manifest.get("campaign", {}),
                **({"not_measured": d.not_measured} if d.not_measured else {}),
                **({"validity": [f.as_dict() for f in cmp.validity[d.label]]}
                   if cmp.validity.get(d.label) else {}),
            }
            for d in cmp.labels
        ],
        "method": {
            "confidence": cmp.confidence, "alpha": cmp.alpha, "min_effect": cmp.min_effect,
            "min_effect_ms": cmp.min_effect_ms,
            "mean_ci": "Student t", "quantile_ci": "BCa bootstrap (scipy.stats.bootstrap)",
            "bootstrap_resamples": N_RESAMPLES, "test": TEST_NAME,
            "multiple_comparisons": "not corrected", "text": cmp.method_text,
        },
        "phases": cmp.phases,
        "stats": stats,
        "comparisons": diffs,
        "gate_failures": list(gate_messages or []),
    }


def write_summary(cmp: Comparison, path: Path, gate_messages: list[str] | None = None) -> Path:
    """Write summary.json (see summary())."""
    path = Path(path)
    path.write_text(
        json.dumps(summary(cmp, gate_messages), indent=2, allow_nan=False) + "\n",
        encoding="utf-8",
    )
    return path


def _b(v: bool) -> str:
    return "true" if v else "false"


def csv_rows(cmp: Comparison) -> list[dict[str, Any]]:
    """The rows of phases.csv (see module doc), warm-up runs included and flagged."""
    out: list[dict[str, Any]] = []
    for d in cmp.labels:
        for inst in d.all_instances:
            phases = inst.record.get("phases") or {}
            for name in [p for p in cmp.phases if p in inst.ms]:
                p = phases.get(name) if isinstance(phases.get(name), dict) else {}
                out.append({
                    "label": d.label, "run": "" if inst.run is None else inst.run,
                    "instance": inst.instance, "job": inst.job, "phase": name,
                    "ms": round(inst.ms[name], 6),
                    "start_ns": p.get("start_ns", ""), "end_ns": p.get("end_ns", ""),
                    "source": p.get("source", "derived" if name == cmp.model.total else ""),
                    "complete": _b(inst.complete), "warmup": _b(inst.warmup),
                })
        for run, ms, wu in d.floor_runs:
            out.append({
                "label": d.label, "run": "" if run is None else run, "instance": "", "job": "",
                "phase": FLOOR_PHASE, "ms": round(ms, 6), "start_ns": "", "end_ns": "",
                "source": "hook", "complete": "true", "warmup": _b(wu),
            })
    return out


def write_csv(cmp: Comparison, path: Path) -> Path:
    """Write phases.csv (see module doc)."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(csv_rows(cmp))
    return path


_SECRET_KEY = re.compile(r"token|secret|auth|passw|credential", re.I)
_SECRET_VALUE = re.compile(r"eyJ[A-Za-z0-9_-]{6,}|gAAAAA[A-Za-z0-9_=-]{20,}")


def safe_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Event attributes minus anything that could be a credential (defence in depth: the
    analyzer already keeps secrets out of timelines): keys naming a token, secret, auth or
    password are dropped, JWT / Fernet-looking strings replaced by "<redacted>"."""
    out = {}
    for k, v in attrs.items():
        if _SECRET_KEY.search(str(k)):
            continue
        out[str(k)] = "<redacted>" if isinstance(v, str) and _SECRET_VALUE.search(v) else v
    return out


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    return v


def nest_lanes(spans: list[tuple[int, int]]) -> list[int]:
    """A lane (0, 1, ...) per (start, end) span, sorted by start then longest first, such that
    the spans of one lane are disjoint or nested: trace viewers draw one thread's complete
    events as a stack and mis-draw partial overlaps. Greedy: the first lane that fits."""
    lanes: list[list[tuple[int, int]]] = []
    out = []
    for start, end in spans:
        for i, lane in enumerate(lanes):
            if all(end <= e or start >= e for s, e in lane if start < e and s <= start):
                lane.append((start, end))
                out.append(i)
                break
        else:
            lanes.append([(start, end)])
            out.append(len(lanes) - 1)
    return out


def trace(cmp: Comparison) -> dict[str, Any]:
    """The Chrome trace-event document of every instance of every label (see module doc)."""
    events: list[dict[str, Any]] = []
    origins: dict[str, int] = {}
    order = {p: i for i, p in enumerate(cmp.phases)}
    for pid, d in enumerate(cmp.labels, start=1):
        per_inst = []
        for inst in d.all_instances:
            phases = {
                n: p for n, p in (inst.record.get("phases") or {}).items()
                if isinstance(p, dict) and isinstance(p.get("start_ns"), int)
                and isinstance(p.get("end_ns"), int)
            }
            per_inst.append((inst, phases, instance_events(d, inst)))
        instants = [p["start_ns"] for _, ph, _ in per_inst for p in ph.values()]
        instants += [e["t_ns"] for _, _, ev in per_inst for e in ev]
        t0 = min(instants) if instants else 0
        origins[d.label] = t0
        events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                       "args": {"name": d.label, "origin_ns": t0}})
        events.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                       "args": {"sort_index": pid}})
        n_inst = len(per_inst)
        extra_tid = n_inst  # tids above n_inst: extra lanes for phases that overlap
        for tid, (inst, phases, evs) in enumerate(per_inst, start=1):
            run = "?" if inst.run is None else inst.run
            wu = " (warm-up)" if inst.warmup else ""
            thread = f"run {run} {inst.instance[:8]}{wu}"
            # longest first so that enclosing phases (total) open before the ones they hold
            ordered = sorted(
                phases.items(),
                key=lambda kv: (kv[1]["start_ns"], -(kv[1]["end_ns"] - kv[1]["start_ns"]),
                                order.get(kv[0], 99)),
            )
            lanes = nest_lanes([(p["start_ns"], p["end_ns"]) for _, p in ordered])
            lane_tid = {0: tid}
            for lane in sorted(set(lanes) - {0}):
                extra_tid += 1
                lane_tid[lane] = extra_tid
            for lane, t in lane_tid.items():
                name = thread if lane == 0 else f"{thread} (overlapping phases {lane})"
                events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": t,
                               "args": {"name": name}})
                events.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": t,
                               "args": {"sort_index": tid * 100 + lane}})
            for (name, p), lane in zip(ordered, lanes, strict=True):
                events.append({
                    "ph": "X", "name": name, "cat": "phase", "pid": pid, "tid": lane_tid[lane],
                    "ts": (p["start_ns"] - t0) / 1000.0,
                    "dur": max(0.0, (p["end_ns"] - p["start_ns"]) / 1000.0),
                    "args": {"ms": inst.ms.get(name), "from": p.get("from"), "to": p.get("to"),
                             "source": p.get("source"), "instance": inst.instance,
                             "warmup": inst.warmup},
                })
            for e in evs:
                events.append({
                    "ph": "i", "s": "t", "name": str(e.get("name", "?")),
                    "cat": str(e.get("source", "?")), "pid": pid, "tid": tid,
                    "ts": (e["t_ns"] - t0) / 1000.0,
                    "args": _json_safe({"host": e.get("host"), **safe_attrs(e.get("attrs") or {})}),
                })
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"vimprof_version": __version__, "vim": cmp.model.vim,
                      "origin_ns": origins, "ts_unit": "µs since the label's first instant"},
    }


def write_trace(cmp: Comparison, path: Path) -> Path:
    """Write trace.json (see trace())."""
    path = Path(path)
    path.write_text(json.dumps(trace(cmp), allow_nan=False) + "\n", encoding="utf-8")
    return path
