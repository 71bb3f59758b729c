"""Distribution, run-index and per-instance timeline charts (matplotlib, Agg, no pyplot).

- `cdf`: one panel per phase (Comparison.chart_phases), the empirical CDF of each label's
  counted runs (warm-up excluded), x in ms.
- `runs`: one panel per phase, latency (ms) against the run index for each label; counted runs
  are filled dots, declared warm-up runs hollow grey with the excluded range shaded: shows
  warm-up and drift.
- `gantt`: one instance of one label (the counted instance whose total is closest to the
  label's median total): phases as bars, then one row per (source, event name) with a marker at
  each instant, x in ms from the instance's first instant. Client instants come from
  requests.jsonl (t_submit_ns, t_registered_ns, t_running_ns, t_stop_ns, t_gone_ns) when the
  timeline record has no `client` events of its own.

Each function returns the Figure; `summarize` reads back what a figure shows (for tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from vimprof.report.compare import FLOOR_PHASE, Comparison, Instance, LabelData

SOURCE_COLORS = {"capture": "tab:blue", "vim": "tab:green", "hook": "tab:red", "client": "black"}
CLIENT_INSTANTS = (
    ("t_submit_ns", "submit"),
    ("t_registered_ns", "register reply"),
    ("t_running_ns", "running seen"),
    ("t_stop_ns", "stop sent"),
    ("t_gone_ns", "gone seen"),
)


@dataclass(frozen=True)
class Panel:
    """One axes of a figure, read back: title, x/y labels, legend-able series, tick labels."""

    title: str
    xlabel: str
    ylabel: str
    series: tuple[str, ...]  # labels of the lines/collections drawn (no '_' internals)
    yticklabels: tuple[str, ...]
    points: int  # data points in lines and scatter collections


@dataclass(frozen=True)
class FigureSummary:
    panels: tuple[Panel, ...]
    legend: tuple[str, ...]  # figure-level legend texts
    suptitle: str


def _colors() -> tuple:
    return matplotlib.colormaps["tab10"].colors


def _grid(n: int, width: float = 10.0, row_h: float = 2.6) -> tuple[Figure, list]:
    cols = min(3, max(1, n))
    rows = math.ceil(n / cols) if n else 1
    fig = Figure(figsize=(width, 1.2 + row_h * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _values(d: LabelData, phase: str) -> list[float]:
    return d.floor_ms if phase == FLOOR_PHASE else d.durations_ms.get(phase, [])


def cdf(cmp: Comparison) -> Figure:
    """Empirical CDF per phase and label (counted runs only)."""
    phases = cmp.chart_phases()
    fig, axes = _grid(len(phases))
    colors = _colors()
    for ax, phase in zip(axes, phases, strict=True):
        for k, d in enumerate(cmp.labels):
            vals = _values(d, phase)
            if vals:
                ax.ecdf(vals, label=d.label, color=colors[k % len(colors)], linewidth=1.5)
        ax.set_title(phase, fontsize=10)
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of runs ≤ x")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    if axes:
        fig.legend(
            *axes[0].get_legend_handles_labels(), loc="outside lower center",
            ncol=min(len(cmp.labels), 6), frameon=False, fontsize=9,
        )
    fig.suptitle(f"{cmp.model.vim}: empirical CDF of each phase ({cmp.warmup_note})",
                 fontsize=11)
    return fig


def _run_points(d: LabelData, phase: str) -> list[tuple[float, float, bool]]:
    """(run index, ms, warmup) for every instance (or floor probe) that has `phase`."""
    if phase == FLOOR_PHASE:
        return [
            (float(r if isinstance(r, int) else i), ms, wu)
            for i, (r, ms, wu) in enumerate(d.floor_runs)
        ]
    out = []
    for i, inst in enumerate(d.all_instances):
        if phase in inst.ms:
            x = inst.run if isinstance(inst.run, int) else i
            out.append((float(x), inst.ms[phase], inst.warmup))
    return out


def runs(cmp: Comparison) -> Figure:
    """Latency against run index per phase and label; warm-up runs hollow and shaded."""
    phases = cmp.chart_phases()
    fig, axes = _grid(len(phases))
    colors = _colors()
    warm = max((d.warmup_runs for d in cmp.labels), default=0)
    for ax, phase in zip(axes, phases, strict=True):
        for k, d in enumerate(cmp.labels):
            pts = _run_points(d, phase)
            kept = [(x, y) for x, y, wu in pts if not wu]
            wups = [(x, y) for x, y, wu in pts if wu]
            c = colors[k % len(colors)]
            if kept:
                xs, ys = zip(*kept, strict=True)
                ax.plot(xs, ys, "o-", color=c, markersize=3.5, linewidth=0.8, label=d.label)
            if wups:
                xs, ys = zip(*wups, strict=True)
                ax.plot(
                    xs, ys, "o", markerfacecolor="none", markeredgecolor=c,
                    markersize=4.5, label=f"{d.label} warm-up (excluded)",
                )
        if warm:
            ax.axvspan(-0.5, warm - 0.5, color="grey", alpha=0.15, linewidth=0)
        ax.set_title(phase, fontsize=10)
        ax.set_xlabel("run index")
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(
            list(handles.values()), list(handles), loc="outside lower center",
            ncol=min(len(handles), 4), frameon=False, fontsize=9,
        )
    hollow = ", drawn hollow" if warm else ""
    fig.suptitle(f"{cmp.model.vim}: latency against run index ({cmp.warmup_note}{hollow})",
                 fontsize=11)
    return fig


def typical_instance(cmp: Comparison, d: LabelData) -> Instance | None:
    """The counted instance whose total is closest to the label's median total (first if
    tied); the first counted instance when none has a total; None when there is none."""
    counted = d.counted
    if not counted:
        return None
    total = cmp.model.total
    med = cmp.stats(total, d.label).median_ms if total in cmp.phases else math.nan
    with_total = [i for i in counted if total in i.ms]
    if not with_total or math.isnan(med):
        return counted[0]
    return min(with_total, key=lambda i: abs(i.ms[total] - med))


def instance_events(d: LabelData, inst: Instance) -> list[dict[str, Any]]:
    """The record's events plus client instants from requests.jsonl (see module doc)."""
    events = [e for e in inst.record.get("events") or [] if isinstance(e.get("t_ns"), int)]
    if any(e.get("source") == "client" for e in events):
        return events
    req = next((r for r in d.request_records if r.get("alloc_id") == inst.instance), None)
    if req is None and inst.run is not None:
        req = next((r for r in d.request_records if r.get("run") == inst.run), None)
    for key, name in CLIENT_INSTANTS if req else ():
        if isinstance(req.get(key), int):  # type: ignore[union-attr]
            events.append({"t_ns": req[key], "source": "client", "host": "pusher",  # type: ignore[index]
                           "name": name, "attrs": {}})
    return events


def gantt(cmp: Comparison, label: str | None = None) -> Figure:
    """The per-instance timeline of `label` (default: the baseline); see module doc.

    Raises KeyError for an unknown label; draws "no instance" text when it has none.
    """
    d = cmp.label(label) if label else cmp.baseline
    inst = typical_instance(cmp, d)
    fig = Figure(figsize=(10.0, 2.0), layout="constrained")
    ax = fig.add_subplot()
    if inst is None:
        ax.text(0.5, 0.5, f"{d.label}: no counted instance", ha="center", transform=ax.transAxes)
        return fig
    phases = {
        name: p for name, p in (inst.record.get("phases") or {}).items()
        if isinstance(p, dict) and isinstance(p.get("start_ns"), int)
        and isinstance(p.get("end_ns"), int)
    }
    order = [p for p in cmp.phases if p in phases] + [p for p in phases if p not in cmp.phases]
    events = sorted(instance_events(d, inst), key=lambda e: e["t_ns"])
    instants = [e["t_ns"] for e in events] + [p["start_ns"] for p in phases.values()]
    t0 = min(instants) if instants else 0
    rows: list[str] = []
    colors = _colors()
    for k, name in enumerate(order):
        p = phases[name]
        y = len(rows)
        rows.append(name)
        ax.barh(
            y, (p["end_ns"] - p["start_ns"]) / 1e6, left=(p["start_ns"] - t0) / 1e6,
            height=0.7, color=colors[k % len(colors)], gid=f"phase\x1f{name}",
        )
        ax.text(
            (p["end_ns"] - t0) / 1e6, y, f" {(p['end_ns'] - p['start_ns']) / 1e6:.1f} ms",
            va="center", fontsize=7,
        )
    event_rows: dict[tuple[str, str], int] = {}
    for e in events:
        key = (str(e.get("source", "?")), str(e.get("name", "?")))
        if key not in event_rows:
            event_rows[key] = len(rows)
            host = f" @{e['host']}" if e.get("host") else ""
            rows.append(f"{key[1]} [{key[0]}{host}]")
    seen: set[str] = set()
    for (source, name), y in event_rows.items():
        xs = [(e["t_ns"] - t0) / 1e6 for e in events
              if (str(e.get("source", "?")), str(e.get("name", "?"))) == (source, name)]
        ax.scatter(
            xs, [y] * len(xs), marker="D", s=18, color=SOURCE_COLORS.get(source, "grey"),
            zorder=3, label=source if source not in seen else None,
        )
        seen.add(source)
    ax.set_yticks(range(len(rows)), rows, fontsize=7.5)
    ax.set_ylim(len(rows) - 0.5, -0.7)
    ax.set_xlabel(f"ms since the instance's first instant (t0 = {t0} ns)")
    run = f"run {inst.run}" if inst.run is not None else "run ?"
    ax.set_title(
        f"{d.label}: {run}, instance {inst.instance[:8]} (total closest to the median)",
        fontsize=10,
    )
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    fig.set_size_inches(10.0, 1.3 + 0.2 * len(rows))
    if seen:
        ax.legend(title="event source", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def summarize(fig: Figure) -> FigureSummary:
    """What `fig` shows: per visible axes its title, labels, named series and point count."""
    panels = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        series = [ln.get_label() for ln in ax.lines] + [c.get_label() for c in ax.collections]
        points = sum(len(ln.get_xdata()) for ln in ax.lines)
        points += sum(len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets"))
        panels.append(
            Panel(
                title=ax.get_title(),
                xlabel=ax.get_xlabel(),
                ylabel=ax.get_ylabel(),
                series=tuple(s for s in series if s and not s.startswith("_")),
                yticklabels=tuple(t.get_text() for t in ax.get_yticklabels()),
                points=int(points),
            )
        )
    legend = tuple(t.get_text() for lg in fig.legends for t in lg.get_texts())
    sup = fig.get_suptitle() if hasattr(fig, "get_suptitle") else ""
    return FigureSummary(tuple(panels), legend, sup)

