"""Horizontal stacked phase bars per label with CI whiskers (Ventre et al. 2016, Fig. 6).

One bar per label (the baseline on top); its segments are the model's `stack` phases laid end
to end, each as long as the phase's mean. At the end of each segment a whisker shows the
confidence interval of that phase's mean (mean ± t·s/√n, see stats.py). The total's mean and
CI are written to the right of each bar. Drawn on the Agg canvas; pyplot is never used, so no
global figure state leaks and no display is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from vimprof.report.compare import Comparison


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
    legend: tuple[str, ...]  # phase names in the legend
    segments: tuple[Segment, ...]
    whiskers: int  # error bars drawn (one per segment with a CI)
    annotations: tuple[str, ...]  # text next to each bar (total mean and CI)
    xlabel: str


def _total_text(cmp: Comparison, label: str) -> str:
    s = cmp.stats(cmp.model.total, label)
    if s.n == 0:
        return "total: no data"
    text = f"total {s.mean_ms:.1f} ms"
    if s.has_ci:
        text += f"\n{s.confidence:.0%} CI {s.ci_low_ms:.1f}–{s.ci_high_ms:.1f}"
    return text + f" (n={s.n})"


def draw(cmp: Comparison) -> Figure:
    """The figure (not saved); see module docstring."""
    labels = cmp.label_names
    stack = cmp.model.stack
    fig = Figure(figsize=(9.0, 1.6 + 0.75 * len(labels)), layout="constrained")
    ax = fig.add_subplot()
    y = list(range(len(labels)))
    colors = matplotlib.colormaps["tab10"].colors
    left = [0.0] * len(labels)
    right_edge = 0.0
    for k, phase in enumerate(stack):
        st = [cmp.stats(phase, lab) for lab in labels]
        widths = [0.0 if math.isnan(s.mean_ms) else s.mean_ms for s in st]
        bars = ax.barh(
            y,
            widths,
            left=left,
            height=0.55,
            color=colors[k % len(colors)],
            edgecolor="white",
            linewidth=0.8,
            label=phase,
        )
        for i, bar in enumerate(bars):
            bar.set_gid(f"{labels[i]}\x1f{phase}")
        ends = [lft + w for lft, w in zip(left, widths, strict=True)]
        with_ci = [i for i, s in enumerate(st) if s.has_ci]
        if with_ci:
            ax.errorbar(
                [ends[i] for i in with_ci],
                [y[i] for i in with_ci],
                xerr=[st[i].ci_half_width_ms for i in with_ci],
                fmt="none",
                ecolor="black",
                elinewidth=1.0,
                capsize=4,
                capthick=1.0,
            )
        right_edge = max(
            [right_edge] + [ends[i] + (st[i].ci_half_width_ms if st[i].has_ci else 0.0) for i in y]
        )
        left = ends
    span = right_edge if right_edge > 0 else 1.0
    for i, lab in enumerate(labels):
        tot = cmp.stats(cmp.model.total, lab)
        hi = tot.ci_high_ms if tot.has_ci else tot.mean_ms
        x = max(left[i], 0 if math.isnan(hi) else hi, 0.0) + 0.02 * span
        ax.text(x, y[i], _total_text(cmp, lab), va="center", ha="left", fontsize=8.5)
    ax.set_xlim(0, span * 1.45)
    ax.set_yticks(y, labels, fontsize=10)
    ax.set_ylim(len(labels) - 0.4, -0.6)  # baseline on top, as in the paper
    ax.set_xlabel("time (ms)")
    ax.set_title(
        f"{cmp.model.vim}: mean phase durations, whiskers = {cmp.confidence:.0%} CI of the mean",
        fontsize=10,
    )
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(
        title="phase",
        loc="outside lower center",
        ncol=len(stack),
        frameon=False,
        fontsize=9,
    )
    return fig


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
        else:  # ErrorbarContainer: one whisker per point
            whiskers += len(c.lines[2][0].get_segments()) if c.lines[2] else 0
    legend = fig.legends[0] if fig.legends else None
    return ChartSummary(
        path=path,
        labels=tuple(t.get_text() for t in ax.get_yticklabels()),
        legend=tuple(t.get_text() for t in legend.get_texts()) if legend else (),
        segments=tuple(segments),
        whiskers=whiskers,
        annotations=tuple(t.get_text() for t in ax.texts),
        xlabel=ax.get_xlabel(),
    )


def phase_bars(cmp: Comparison, path: Path, dpi: int = 150) -> ChartSummary:
    """Write the PNG to `path` and return what it shows."""
    path = Path(path)
    fig = draw(cmp)
    FigureCanvasAgg(fig)  # the Agg backend, without touching pyplot's global state
    fig.savefig(path, dpi=dpi)
    return summarize(fig, path)
