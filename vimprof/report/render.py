"""The comparison as a terminal table (rich) and as report.md."""

from __future__ import annotations

import math
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from vimprof.report.compare import Comparison, PhaseRow

COLUMNS = ("phase", "label", "n", "mean", "median", "std", "CI", "vs base")


def fmt_ms(value: float) -> str:
    """ms with one decimal; '-' when undefined."""
    return "-" if math.isnan(value) else f"{value:.1f}"


def fmt_ci(row: PhaseRow) -> str:
    s = row.stats
    return f"{s.ci_low_ms:.1f} – {s.ci_high_ms:.1f}" if s.has_ci else "-"


def fmt_ratio(row: PhaseRow) -> str:
    return "-" if math.isnan(row.ratio) else f"×{row.ratio:.2f}"


def _cells(row: PhaseRow, first_of_phase: bool) -> list[str]:
    s = row.stats
    return [
        row.phase if first_of_phase else "",
        row.label,
        str(s.n),
        fmt_ms(s.mean_ms),
        fmt_ms(s.median_ms),
        fmt_ms(s.std_ms),
        fmt_ci(row),
        fmt_ratio(row),
    ]


def _ci_header(cmp: Comparison) -> str:
    return f"{cmp.confidence:.0%} CI of mean"


def _counts(cmp: Comparison) -> str:
    return "\n".join(
        f"{d.label}: {d.instances} instances, {d.incomplete} incomplete, "
        f"{d.failures}/{d.requests} requests failed"
        for d in cmp.labels
    )


def render_table(cmp: Comparison, console: Console) -> Table:
    """Print the per-phase table (ms, one decimal) to `console`; fits 100 columns."""
    table = Table(
        title=f"{cmp.model.vim}: phase durations (ms), baseline {cmp.baseline.label}",
        caption=_counts(cmp),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("phase", overflow="fold", max_width=18)
    table.add_column("label", overflow="fold", max_width=30)
    table.add_column("n", justify="right")
    table.add_column("mean", justify="right")
    table.add_column("median", justify="right")
    table.add_column("std", justify="right")
    table.add_column(_ci_header(cmp), justify="right", no_wrap=True)
    table.add_column("median\nvs base", justify="right")
    for i, phase in enumerate(cmp.phases):
        rows = [r for r in cmp.rows if r.phase == phase]
        for j, row in enumerate(rows):
            table.add_row(
                *_cells(row, j == 0),
                end_section=(j == len(rows) - 1 and i < len(cmp.phases) - 1),
            )
    console.print(table)
    return table


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def markdown(cmp: Comparison, chart_name: str | None = "phases.png") -> str:
    """The text of report.md (see write_markdown)."""
    conf = f"{cmp.confidence:.0%}"
    out = [f"# vimprof compare: {', '.join(_md_escape(n) for n in cmp.label_names)}", ""]
    out += [
        f"VIM: {cmp.model.vim}. Baseline: {_md_escape(cmp.baseline.label)}. "
        f"Durations in ms; the {conf} confidence interval of the mean is the Student t "
        f"interval mean ± t(1-α/2, n-1)·s/√n.",
        "",
        "## Runs",
        "",
        "| label | run directory | instances | incomplete | failed requests |",
        "|---|---|---:|---:|---:|",
    ]
    for d in cmp.labels:
        out.append(
            f"| {_md_escape(d.label)} | `{d.run.path}` | {d.instances} | {d.incomplete} "
            f"| {d.failures}/{d.requests} |"
        )
    out += [
        "",
        "## Phases",
        "",
        f"| phase | label | n | mean | median | std | {conf} CI of mean | median vs base |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in cmp.phases:
        for row in (r for r in cmp.rows if r.phase == phase):
            cells = _cells(row, True)
            cells[0], cells[1] = _md_escape(cells[0]), _md_escape(cells[1])
            out.append("| " + " | ".join(cells) + " |")
    notes = sorted({f"{r.label}/{r.phase}: {r.stats.note}" for r in cmp.rows if r.stats.note})
    if notes:
        out += ["", "Notes:", ""] + [f"- {_md_escape(n)}" for n in notes]
    if chart_name:
        out += [
            "",
            "## Chart",
            "",
            f"Stacked means of {', '.join(cmp.model.stack)}; whiskers: {conf} CI of each "
            f"phase mean, at the end of its segment.",
            "",
            f"![phase breakdown per label]({chart_name})",
        ]
    return "\n".join(out) + "\n"


def write_markdown(cmp: Comparison, path: Path, chart_name: str | None = "phases.png") -> Path:
    """Write report.md: the run directories, the phase table and the chart by relative path."""
    path = Path(path)
    path.write_text(markdown(cmp, chart_name), encoding="utf-8")
    return path
