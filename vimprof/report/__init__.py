"""Statistics, comparison, rendering, charts and exports of run directories (`vimprof compare`,
`vimprof plot`).

    cmp = write_report([RunDir(Path("runs/stock")), RunDir(Path("runs/tuned"))], out, console)

prints the tables to `console` and writes into `out`:

    report.md        every statistic and verdict, charts by relative path
    report.html      self-contained: the same with the charts inline as SVG
    summary.json     statistics and comparisons for other tools (null = undefined)
    phases.csv       one row per instance x phase (see export.py for the columns)
    trace.json       Chrome trace-event JSON of every instance (Perfetto, chrome://tracing)
    phases.png       VIM-level stacked phase bars (Ventre et al. Fig. 6 style)
    breakdown.png    driver/spawn breakdown bars (only when some label has breakdown phases)
    cdf.png          empirical CDF per phase and label
    runs.png         latency against run index (warm-up, drift)
    gantt-LABEL.png  one typical instance per label with every source's events

Each label's validity flags (validity.py: generator lag, capture drops, too few runs, clocks,
CPU saturation, an early stop) go to the notes, report.md/html and summary.json.

`gates` (compare.Gate, `--fail-if-slower`) are evaluated; their failure messages are in
`cmp.gate_messages`, in report.md/html and in summary.json; the caller decides the exit status.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from rich.console import Console

from vimprof.report import chart, plots
from vimprof.report.chart import ChartSummary, breakdown_bars, phase_bars
from vimprof.report.compare import (
    Comparison,
    Diff,
    Gate,
    LabelData,
    PhaseRow,
    compare,
    gate_failures,
    load_label,
)
from vimprof.report.export import write_csv, write_summary, write_trace
from vimprof.report.html import write_html
from vimprof.report.render import render_table, write_markdown
from vimprof.report.stats import N_RESAMPLES, PhaseStats, phase_stats
from vimprof.report.validity import check_comparison
from vimprof.rundir import RunDir

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
SUMMARY_JSON = "summary.json"
PHASES_CSV = "phases.csv"
TRACE_JSON = "trace.json"
CHART_PNG = "phases.png"
BREAKDOWN_PNG = "breakdown.png"
CDF_PNG = "cdf.png"
RUNS_PNG = "runs.png"

__all__ = [
    "BREAKDOWN_PNG", "CDF_PNG", "CHART_PNG", "PHASES_CSV", "REPORT_HTML", "REPORT_MD",
    "RUNS_PNG", "SUMMARY_JSON", "TRACE_JSON", "ChartSummary", "Comparison", "Diff", "Gate",
    "LabelData", "PhaseRow", "PhaseStats", "breakdown_bars", "compare", "figures", "gantt_name",
    "gate_failures", "load_label", "phase_bars", "phase_stats", "render_table",
    "write_charts", "write_markdown", "write_plots", "write_report",
]


def gantt_name(label: str) -> str:
    """gantt-LABEL.png, with characters outside [A-Za-z0-9._-] replaced by '_'."""
    return f"gantt-{re.sub(r'[^A-Za-z0-9._-]', '_', label)}.png"


def figures(cmp: Comparison) -> dict[str, tuple[str, Figure]]:
    """Chart key -> (PNG file name, figure), in report order (see module doc)."""
    out: dict[str, tuple[str, Figure]] = {"phases": (CHART_PNG, chart.draw(cmp))}
    if cmp.has_breakdown():
        out["breakdown"] = (BREAKDOWN_PNG, chart.draw_breakdown(cmp))
    if cmp.chart_phases():
        out["cdf"] = (CDF_PNG, plots.cdf(cmp))
        out["runs"] = (RUNS_PNG, plots.runs(cmp))
    for lab in cmp.label_names:
        out[f"gantt:{lab}"] = (gantt_name(lab), plots.gantt(cmp, lab))
    return out


def write_charts(
    cmp: Comparison, out_dir: Path, svg: bool = False, dpi: int = 100,
) -> tuple[dict[str, str], dict[str, str]]:
    """Write every chart as PNG into `out_dir`; returns ({key: png name}, {key: inline svg}).

    The SVG texts are produced only with `svg=True` (for report.html).
    """
    names: dict[str, str] = {}
    svgs: dict[str, str] = {}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for key, (name, fig) in figures(cmp).items():
        chart.save(fig, Path(out_dir) / name, dpi=dpi)
        names[key] = name
        if svg:
            fig.set_layout_engine("none")  # keep the layout the PNG computed: half the work
            svgs[key] = chart.svg_text(fig, re.sub(r"\W", "_", key))
    return names, svgs


FILE_NOTES = {
    REPORT_HTML: "the same report as one self-contained page (charts inline as SVG)",
    SUMMARY_JSON: "statistics and verdicts as JSON (null = undefined)",
    PHASES_CSV: "one row per instance x phase: label, run, instance, job, phase, ms, "
    "start_ns, end_ns, source, complete, warmup",
    TRACE_JSON: "Chrome trace-event JSON of every instance: open in ui.perfetto.dev "
    "or chrome://tracing",
}


def write_report(
    runs: list[RunDir], out_dir: Path, console: Console, *, alpha: float = 0.05,
    min_effect: float = 0.05, gates: Sequence[Gate] = (), n_resamples: int = N_RESAMPLES,
    min_effect_ms: float = 1.0,
) -> Comparison:
    """Compare `runs` (the first is the baseline), print the tables, write the report files.

    Raises VimprofError (see compare() and gate_failures()) before writing anything if a run
    cannot be read, an option is out of range or a gate names an unknown phase.
    """
    cmp = compare(runs, alpha=alpha, min_effect=min_effect, n_resamples=n_resamples,
                  min_effect_ms=min_effect_ms)
    cmp.gate_messages = gate_failures(cmp, gates)
    check_comparison(cmp)  # validity flags: notes, report.md/html, summary.json
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    render_table(cmp, console)
    names, svgs = write_charts(cmp, out_dir, svg=True)
    write_summary(cmp, out_dir / SUMMARY_JSON, cmp.gate_messages)
    write_csv(cmp, out_dir / PHASES_CSV)
    write_trace(cmp, out_dir / TRACE_JSON)
    write_markdown(cmp, out_dir / REPORT_MD, None, names, FILE_NOTES)
    md_files = {REPORT_MD: "the same report in Markdown (charts as PNG beside it)"}
    write_html(
        cmp, out_dir / REPORT_HTML, svgs,
        {**md_files, **{k: v for k, v in FILE_NOTES.items() if k != REPORT_HTML}},
        cmp.gate_messages,
    )
    return cmp


def write_plots(runs: list[RunDir], out_dir: Path) -> dict[str, str]:
    """Charts only (PNG), from the runs' existing timelines; returns {chart key: file name}.

    No bootstrap (the bars need only means and t CIs). Raises VimprofError like compare().
    """
    cmp = compare(runs, n_resamples=0)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names, _ = write_charts(cmp, out_dir)
    return names
