"""Statistics, comparison, rendering and charts of run directories (`vimprof compare`).

    cmp = write_report([RunDir(Path("runs/stock")), RunDir(Path("runs/tuned"))], out, console)

writes out/report.md and out/phases.png and prints the table to `console`.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from vimprof.report.chart import ChartSummary, phase_bars
from vimprof.report.compare import Comparison, LabelData, PhaseRow, compare, load_label
from vimprof.report.render import render_table, write_markdown
from vimprof.report.stats import PhaseStats, phase_stats
from vimprof.rundir import RunDir

REPORT_MD = "report.md"
CHART_PNG = "phases.png"

__all__ = [
    "CHART_PNG",
    "REPORT_MD",
    "ChartSummary",
    "Comparison",
    "LabelData",
    "PhaseRow",
    "PhaseStats",
    "compare",
    "load_label",
    "phase_bars",
    "phase_stats",
    "render_table",
    "write_markdown",
    "write_report",
]


def write_report(runs: list[RunDir], out_dir: Path, console: Console) -> Comparison:
    """Compare `runs` (the first is the baseline), print the table, write report.md and the chart.

    Raises VimprofError (see compare()) before writing anything if a run cannot be read.
    """
    cmp = compare(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    render_table(cmp, console)
    phase_bars(cmp, out_dir / CHART_PNG)
    write_markdown(cmp, out_dir / REPORT_MD, CHART_PNG)
    return cmp
