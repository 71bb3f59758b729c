"""Run validity: flags that say a run's numbers should not be trusted as they are.

`validity(label_data_or_run) -> list[Flag]`; each Flag has a `code` and a one-line `message`
with the numbers behind it. The checks (defaults in the constants below):

- "generator-lag": the load generator sent late: the send lag's p99 (t_sent - t_intended,
  the manifest's `load.lag_ms.p99`, else computed from requests.jsonl `send_lag_ms`, every
  request sent, warm-up included: the generator's schedule covers them all) is above
  LAG_P99_MS (10 ms), or some request was sent more than LAG_MAX_MS (100 ms) late. A late
  send is load the VIM did not get when the schedule said (coordinated omission).
- "capture-drops": tcpdump lost packets: the manifest's `capture_stats.dropped_by_kernel`
  or `dropped_by_interface` ("N packets dropped by interface") above 0. The phases of the
  instances whose packets were lost may be missing or wrong.
- "too-few-runs": fewer counted runs (the `total` phase's n) than the distribution-free CI of
  the median or the p95 needs: n >= ln(α/2) / ln(max(q, 1-q)) (report.stats
  .min_n_for_quantile_ci: 6 for the median, 72 for p95 at 95%). The bootstrap CIs are then
  optimistic.
- "clock-disagreement": capture points disagree beyond their tolerance: some counted
  instance's `crosscheck.disagreements` (analyzer/enrich.py, tolerance in the record,
  50 ms by default) is above 0, or the manifest's `xen.dom0_clock` entries show dom0's clock
  off the host's by more than CLOCK_TOLERANCE_MS (3 ms, the xl campaign's own tolerance) plus
  twice the reading's uncertainty after the campaign's correction (`offset_after_ms` when it
  stepped the clock, else `offset_ms`).
- "cpu-saturated": only when the run directory has HOST_LOAD (host-load.jsonl, one record per
  sample: {"t_ns": int, "host": str, "cpu_pct": float (busy %, all cores), "mem_pct": float});
  a host whose p90 of cpu_pct is at least CPU_SATURATED_PCT (95 %). Without the file the check
  is not made (`not_checked()` says so).
- "stopped-early": the open-loop engine stopped for another reason than the end of its plan
  (`load.stopped_reason` not in max-runs / schedule-end / max-duration: max-in-flight, i.e.
  the VIM fell behind, an interrupt or an error): the offered load was not the one planned.

Closed-loop and sequential campaigns without a `load` summary in the manifest get the
generator checks from requests.jsonl only when its records carry `send_lag_ms`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vimprof.report.compare import Comparison, LabelData, load_label
from vimprof.report.stats import min_n_for_quantile_ci
from vimprof.rundir import RunDir, read_jsonl

HOST_LOAD = "host-load.jsonl"
LAG_P99_MS = 10.0
LAG_MAX_MS = 100.0
CLOCK_TOLERANCE_MS = 3.0
CPU_SATURATED_PCT = 95.0
PLANNED_STOPS = ("max-runs", "schedule-end", "max-duration")

GENERATOR_LAG = "generator-lag"
CAPTURE_DROPS = "capture-drops"
TOO_FEW_RUNS = "too-few-runs"
CLOCK_DISAGREEMENT = "clock-disagreement"
CPU_SATURATED = "cpu-saturated"
STOPPED_EARLY = "stopped-early"
CODES = (GENERATOR_LAG, CAPTURE_DROPS, TOO_FEW_RUNS, CLOCK_DISAGREEMENT, CPU_SATURATED,
         STOPPED_EARLY)


@dataclass(frozen=True)
class Flag:
    """One validity problem of a run: `code` (CODES) and a one-line message with numbers."""

    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def _label_data(subject: LabelData | RunDir) -> LabelData:
    return subject if isinstance(subject, LabelData) else load_label(subject)


def send_lags_ms(d: LabelData) -> list[float]:
    """`send_lag_ms` of every request record that has one (warm-up included)."""
    out = []
    for r in d.request_records:
        v = r.get("send_lag_ms")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
    return out


def lag_summary(d: LabelData) -> dict[str, float] | None:
    """{"p99", "max", "n"} of the send lag (ms): the manifest's load.lag_ms when present
    (the engine's numbers), else from requests.jsonl; None when neither has any."""
    lags = send_lags_ms(d)
    load = d.manifest.get("load") or {}
    lag = load.get("lag_ms") or {}
    if isinstance(lag.get("p99"), (int, float)) and isinstance(lag.get("max"), (int, float)):
        return {"p99": float(lag["p99"]), "max": float(lag["max"]),
                "n": float(load.get("sent") or len(lags))}
    if not lags:
        return None
    x = np.asarray(lags)
    return {"p99": float(np.percentile(x, 99)), "max": float(x.max()), "n": float(x.size)}


def _generator(d: LabelData, p99_tol: float, max_tol: float) -> list[Flag]:
    lag = lag_summary(d)
    if lag is None:
        return []
    if lag["p99"] > p99_tol or lag["max"] > max_tol:
        why = []
        if lag["p99"] > p99_tol:
            why.append(f"send lag p99 {lag['p99']:.1f} ms > {p99_tol:g} ms tolerance")
        if lag["max"] > max_tol:
            why.append(f"a send {lag['max']:.1f} ms late > {max_tol:g} ms")
        return [Flag(GENERATOR_LAG,
                     f"the load generator lagged its schedule: {'; '.join(why)} "
                     f"(max {lag['max']:.1f} ms over {int(lag['n'])} sends)")]
    return []


def _capture(d: LabelData) -> list[Flag]:
    st = d.manifest.get("capture_stats")
    if not isinstance(st, dict):
        return []
    kernel = int(st.get("dropped_by_kernel") or 0)
    iface = int(st.get("dropped_by_interface") or 0)
    if kernel <= 0 and iface <= 0:
        return []
    return [Flag(CAPTURE_DROPS,
                 f"the capture dropped packets: {kernel} by the kernel, {iface} by the "
                 f"interface (of {st.get('captured', '?')} captured)")]


def _too_few(d: LabelData, confidence: float) -> list[Flag]:
    n = len(d.durations_ms.get(d.model.total, []))
    need = {name: min_n_for_quantile_ci(q, confidence) for name, q in
            (("median", 0.5), ("p95", 0.95))}
    short = [f"the {name} needs n >= {k}" for name, k in need.items() if n < k]
    if not short:
        return []
    return [Flag(TOO_FEW_RUNS,
                 f"{n} runs measured ({d.model.total}): too few for {confidence:.0%} CIs: "
                 f"{', '.join(short)} (n >= ln(α/2)/ln(max(q, 1-q)))")]


def _clocks(d: LabelData, tol_ms: float) -> list[Flag]:
    out = []
    bad, tol = 0, None
    for inst in d.counted:
        xc = inst.record.get("crosscheck")
        if isinstance(xc, dict) and (xc.get("disagreements") or 0) > 0:
            bad += 1
            tol = xc.get("tolerance_ms", tol)
        # (checks themselves stay in the timelines; the count is what matters here)
    if bad:
        tol_text = f" beyond {tol:g} ms" if isinstance(tol, (int, float)) else ""
        out.append(Flag(CLOCK_DISAGREEMENT,
                        f"{bad} of {d.instances} instances: capture and VIM/hook times "
                        f"disagree{tol_text} (timelines' crosscheck)"))
    entries = (d.manifest.get("xen") or {}).get("dom0_clock") or []
    worst: tuple[float, float] | None = None
    for e in entries:
        if not isinstance(e, dict):
            continue
        off = e.get("offset_after_ms", e.get("offset_ms"))
        if not isinstance(off, (int, float)):
            continue
        unc = float(e.get("uncertainty_ms") or 0.0)
        if abs(off) > tol_ms + 2 * unc and (worst is None or abs(off) > abs(worst[0])):
            worst = (float(off), unc)
    if worst is not None:
        out.append(Flag(CLOCK_DISAGREEMENT,
                        f"dom0's clock off the host's by {worst[0]:+.1f} ms (± {worst[1]:.1f}) "
                        f"> {tol_ms:g} ms tolerance (manifest xen.dom0_clock)"))
    return out


def host_load(run: RunDir) -> list[dict[str, Any]] | None:
    """The records of the run's host-load.jsonl, None when it has none (not sampled)."""
    path = run.path / HOST_LOAD
    if not path.is_file():
        return None
    return list(read_jsonl(path))


def host_load_summary(run: RunDir) -> dict[str, dict[str, float]] | None:
    """Per host: samples, p50/p90/max of cpu_pct and max of mem_pct; None when not sampled."""
    recs = host_load(run)
    if recs is None:
        return None
    out: dict[str, dict[str, float]] = {}
    hosts = sorted({str(r.get("host", "?")) for r in recs})
    for h in hosts:
        cpu = [float(r["cpu_pct"]) for r in recs if str(r.get("host", "?")) == h
               and isinstance(r.get("cpu_pct"), (int, float))]
        mem = [float(r["mem_pct"]) for r in recs if str(r.get("host", "?")) == h
               and isinstance(r.get("mem_pct"), (int, float))]
        s: dict[str, float] = {"samples": float(len(cpu))}
        if cpu:
            s.update(cpu_p50=float(np.percentile(cpu, 50)), cpu_p90=float(np.percentile(cpu, 90)),
                     cpu_max=float(max(cpu)))
        if mem:
            s["mem_max"] = float(max(mem))
        out[h] = s
    return out


def _cpu(d: LabelData, limit: float) -> list[Flag]:
    summary = host_load_summary(d.run)
    if not summary:
        return []
    return [Flag(CPU_SATURATED,
                 f"host {h} CPU-saturated: p90 of CPU busy {s['cpu_p90']:.0f}% >= {limit:g}% "
                 f"({int(s['samples'])} samples, {HOST_LOAD})")
            for h, s in summary.items() if s.get("cpu_p90", 0.0) >= limit]


def _stopped(d: LabelData) -> list[Flag]:
    load = d.manifest.get("load")
    if not isinstance(load, dict) or not load.get("stopped_reason"):
        return []
    why = load["stopped_reason"]
    if why in PLANNED_STOPS:
        return []
    planned = (d.manifest.get("campaign") or {}).get("runs")
    of = f" of {planned} planned" if planned else ""
    extra = (f", {load.get('peak_in_flight')} in flight (limit {load.get('max_in_flight')})"
             if why == "max-in-flight" else "")
    return [Flag(STOPPED_EARLY,
                 f"the campaign stopped early ({why}{extra}) after {load.get('sent', '?')} "
                 f"sends{of}: the schedule was not completed")]


def validity(
    subject: LabelData | RunDir, *, confidence: float = 0.95, lag_p99_ms: float = LAG_P99_MS,
    lag_max_ms: float = LAG_MAX_MS, clock_tolerance_ms: float = CLOCK_TOLERANCE_MS,
    cpu_saturated_pct: float = CPU_SATURATED_PCT,
) -> list[Flag]:
    """Every validity flag of one run (see module doc), in CODES order; [] when valid.

    A RunDir is read with compare.load_label (raises VimprofError like it).
    """
    d = _label_data(subject)
    return (_generator(d, lag_p99_ms, lag_max_ms) + _capture(d) + _too_few(d, confidence)
            + _clocks(d, clock_tolerance_ms) + _cpu(d, cpu_saturated_pct) + _stopped(d))


def check_comparison(cmp: Comparison) -> dict[str, list[Flag]]:
    """Set and return `cmp.validity`: every label's flags at the comparison's confidence."""
    cmp.validity = {d.label: validity(d, confidence=cmp.confidence) for d in cmp.labels}
    return cmp.validity


def not_checked(subject: LabelData | RunDir) -> list[str]:
    """The checks that could not be made for lack of data, in words."""
    d = _label_data(subject)
    out = []
    if host_load(d.run) is None:
        out.append(f"CPU saturation not checked: no {HOST_LOAD} in {d.run.path} (not sampled)")
    if lag_summary(d) is None:
        out.append("generator lag not checked: no load summary and no send_lag_ms")
    if not isinstance(d.manifest.get("capture_stats"), dict):
        out.append("capture drops not checked: no capture_stats in the manifest")
    return out
