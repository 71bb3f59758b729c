"""Horizontal stacked phase bars per label with CI whiskers (Ventre et al. 2016, Fig. 6).

One bar per label (the baseline on top); its segments are one level's phases laid end to end,
each as long as the phase's mean: the VIM level (`model.stack`, `phase_bars`) or the driver /
spawn breakdown (`model.breakdown`, `breakdown_bars`, Fig. 6b/6d of the paper). At the end of
each segment a whisker shows the confidence interval of that phase's mean (mean ± t·s/√n, see
stats.py). The total's (or the broken-down phase's) mean and CI are written to the right of
each bar. On the breakdown chart, when hooks.jsonl holds floor probes, a dashed black mark
sits at start-of-spawn + mean floor: where spawn would end if it cost only the hypervisor.

Drawn on the Agg canvas; pyplot is never used, so no global figure state leaks and no display
is needed. `save` writes PNG or SVG by suffix; `svg_text` returns inline SVG for report.html.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

from vimprof.report.compare import FLOOR_PHASE, Comparison

FLOOR_ANCHOR = {"nomad": "spawn", "nova": "libvirt_spawn"}  # the breakdown phase floors bound
FLOOR_GID = "floor-mark"


@dataclass(frozen=True)
class Segment:
    """One drawn bar segment, read back from the figure."""

    label: str
    phase: str
    left_ms: float
    width_ms: float


@dataclass(frozen=True)
class ChartSummary:
    """What the chart shows, read back from the matplotlib artists (for tests and logs)."""

    path: Path
    labels: tuple[str, ...]  # y tick labels, top to bottom
    legend: tuple[str, ...]  # phase names in the legend (and the floor mark's entry)
    segments: tuple[Segment, ...]
    whiskers: int  # error bars drawn (one per segment with a CI)
    annotations: tuple[str, ...]  # text next to each bar (total mean and CI)
    xlabel: str
    title: str = ""
    floor_marks: tuple[tuple[str, float], ...] = ()  # (label, x in ms) of each floor mark


def _total_text(cmp: Comparison, label: str, phase: str, name: str = "total") -> str:
    s = cmp.stats(phase, label) if phase in cmp.phases else None
    if s is None or s.n == 0:
        return f"{name}: no data"
    text = f"{name} {s.mean_ms:.1f} ms"
    if s.has_ci:
        text += f"\n{s.confidence:.0%} CI {s.ci_low_ms:.1f}–{s.ci_high_ms:.1f}"
    return text + f" (n={s.n})"


def _mean(cmp: Comparison, phase: str, label: str) -> float:
    if phase not in cmp.phases:
        return 0.0
    m = cmp.stats(phase, label).mean_ms
    return 0.0 if math.isnan(m) else m


def _draw_stack(
    cmp: Comparison, stack: tuple[str, ...], ref_phase: str, ref_name: str, title: str,
    floor: bool = False,
) -> Figure:
    labels = cmp.label_names
    fig = Figure(figsize=(9.0, 1.6 + 0.75 * len(labels)), layout="constrained")
    ax = fig.add_subplot()
    y = list(range(len(labels)))
    colors = matplotlib.colormaps["tab10"].colors
    left = [0.0] * len(labels)
    bar_right = [0.0] * len(labels)  # per bar: the end of its rightmost segment or whisker
    right_edge = 0.0
    anchor_left: list[float] | None = None
    anchor = FLOOR_ANCHOR.get(cmp.model.vim, stack[0] if stack else "")
    for k, phase in enumerate(stack):
        st = [cmp.stats(phase, lab) if phase in cmp.phases else None for lab in labels]
        widths = [_mean(cmp, phase, lab) for lab in labels]
        if phase == anchor:
            anchor_left = list(left)
        bars = ax.barh(
            y, widths, left=left, height=0.55, color=colors[k % len(colors)],
            edgecolor="white", linewidth=0.8, label=phase,
        )
        for i, bar in enumerate(bars):
            bar.set_gid(f"{labels[i]}\x1f{phase}")
        ends = [lft + w for lft, w in zip(left, widths, strict=True)]
        with_ci = [i for i, s in enumerate(st) if s is not None and s.has_ci]
        if with_ci:
            ax.errorbar(
                [ends[i] for i in with_ci],
                [y[i] for i in with_ci],
                xerr=[st[i].ci_half_width_ms for i in with_ci],  # type: ignore[union-attr]
                fmt="none", ecolor="black", elinewidth=1.0, capsize=4, capthick=1.0,
            )
        reach = [ends[i] + (st[i].ci_half_width_ms if i in with_ci else 0.0) for i in y]  # type: ignore[union-attr]
        bar_right = [max(r, e) for r, e in zip(bar_right, reach, strict=True)]
        right_edge = max([right_edge, *reach])
        left = ends
    if floor and anchor_left is not None:
        first = True
        for i, lab in enumerate(labels):
            fl = cmp.stats(FLOOR_PHASE, lab)
            if fl.n == 0:
                continue
            x = anchor_left[i] + fl.mean_ms
            (line,) = ax.plot(
                [x, x], [y[i] - 0.38, y[i] + 0.38], color="black", linestyle="--",
                linewidth=1.6, label=f"{FLOOR_PHASE} (hypervisor alone)" if first else None,
            )
            line.set_gid(f"{FLOOR_GID}\x1f{lab}")
            first = False
            right_edge = max(right_edge, x)
    text_x = []
    for i, lab in enumerate(labels):
        ref = cmp.stats(ref_phase, lab) if ref_phase in cmp.phases else None
        hi = ref.ci_high_ms if ref is not None and ref.has_ci else (ref.mean_ms if ref else 0.0)
        text_x.append(max(bar_right[i], 0 if math.isnan(hi) else hi, 0.0))
    span = max(right_edge, *text_x) or 1.0
    for i, lab in enumerate(labels):
        x = text_x[i] + 0.02 * span
        ax.text(x, y[i], _total_text(cmp, lab, ref_phase, ref_name), va="center", ha="left",
                fontsize=8.5)
    ax.set_xlim(0, span * 1.45)
    ax.set_yticks(y, labels, fontsize=10)
    ax.set_ylim(len(labels) - 0.4, -0.6)  # baseline on top, as in the paper
    ax.set_xlabel("time (ms)")
    ax.set_title(f"{title}\n{cmp.warmup_note}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    pairs = list(zip(*ax.get_legend_handles_labels(), strict=True))
    pairs.sort(key=lambda hn: hn[1].startswith(FLOOR_PHASE))  # phases first, floor mark last
    handles, names = [h for h, _ in pairs], [n for _, n in pairs]
    fig.legend(
        handles, names, title="phase", loc="outside lower center",
        ncol=min(len(names), 5), frameon=False, fontsize=9,
    )
    return fig


def draw(cmp: Comparison) -> Figure:
    """The VIM-level figure (not saved); see module docstring."""
    return _draw_stack(
        cmp, cmp.model.stack, cmp.model.total, "total",
        f"{cmp.model.vim}: mean phase durations, whiskers = {cmp.confidence:.0%} CI of the mean",
    )


def draw_breakdown(cmp: Comparison) -> Figure:
    """The driver/spawn breakdown figure (model.breakdown), with floor marks when present."""
    of = cmp.model.breakdown_of
    overlap = any(d.breakdown_overlaps for d in cmp.labels)
    return _draw_stack(
        cmp, cmp.model.breakdown, of, of,
        f"{cmp.model.vim}: breakdown of {of} (mean durations, whiskers = "
        f"{cmp.confidence:.0%} CI of the mean)"
        + ("\nwarning: some of these phases overlap in time, the stack over-counts"
           if overlap else ""),
        floor=cmp.has_floor,
    )


def summarize(fig: Figure, path: Path) -> ChartSummary:
    """Read the drawn content back from the figure's artists."""
    ax = fig.axes[0]
    segments = []
    whiskers = 0
    for c in ax.containers:
        if isinstance(c, BarContainer):
            for bar in c:
                lab, phase = (bar.get_gid() or "\x1f").split("\x1f", 1)
                segments.append(Segment(lab, phase, float(bar.get_x()), float(bar.get_width())))
        elif isinstance(c, ErrorbarContainer):  # one whisker per point
            whiskers += len(c.lines[2][0].get_segments()) if c.lines[2] else 0
    floors = tuple(
        (line.get_gid().split("\x1f", 1)[1], float(line.get_xdata()[0]))
        for line in ax.lines
        if (line.get_gid() or "").startswith(FLOOR_GID)
    )
    legend = fig.legends[0] if fig.legends else None
    return ChartSummary(
        path=path,
        labels=tuple(t.get_text() for t in ax.get_yticklabels()),
        legend=tuple(t.get_text() for t in legend.get_texts()) if legend else (),
        segments=tuple(segments),
        whiskers=whiskers,
        annotations=tuple(t.get_text() for t in ax.texts),
        xlabel=ax.get_xlabel(),
        title=ax.get_title(),
        floor_marks=floors,
    )


def save(fig: Figure, path: Path, dpi: int = 150) -> Path:
    """Write `fig` as PNG or SVG (by suffix) on the Agg canvas; SVG keeps text as text."""
    path = Path(path)
    FigureCanvasAgg(fig)  # the Agg backend, without touching pyplot's global state
    if path.suffix.lower() == ".svg":
        path.write_text(svg_text(fig, path.stem), encoding="utf-8")
    else:
        fig.savefig(path, dpi=dpi)
    return path


def svg_text(fig: Figure, salt: str) -> str:
    """`fig` as an <svg> element (no XML prolog), ids salted with `salt` so that several can
    be inlined in one HTML page."""
    FigureCanvasAgg(fig)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.S)  # RDF boilerplate
    used = set(re.findall(r"#([\w.-]+)", text))  # href="#m..", url(#p..) (and colours)
    return re.sub(  # drop unreferenced ids (figure_1, patch_2...): unique in a page
        r' id="([^"]+)"', lambda m: m.group(0) if m.group(1) in used else "", text
    )


def phase_bars(cmp: Comparison, path: Path, dpi: int = 150) -> ChartSummary:
    """Write the VIM-level chart to `path` (PNG or SVG) and return what it shows."""
    fig = draw(cmp)
    return summarize(fig, save(fig, path, dpi))


def breakdown_bars(cmp: Comparison, path: Path, dpi: int = 150) -> ChartSummary:
    """Write the breakdown chart to `path` (PNG or SVG) and return what it shows."""
    fig = draw_breakdown(cmp)
    return summarize(fig, save(fig, path, dpi))
