"""The comparison as terminal tables (rich, fit 100 columns) and as report.md.

Terminal: a "phase durations" table (n, failures, mean with its t CI, median with its BCa CI,
p95) and, with two or more labels, a "vs baseline" table (Δ median and ratio with bootstrap
CIs, Mann-Whitney p, verdict). report.md holds every statistic (sd, p90, p99, min, max too).
Every output states the warm-up rule applied and names the test.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from vimprof.report.compare import FLOOR_PHASE, TEST_NAME, Comparison, PhaseRow


def fmt_ms(value: float) -> str:
    """ms with one decimal (no decimal from 10 s up); '-' when undefined."""
    if math.isnan(value):
        return "-"
    return f"{value:.0f}" if abs(value) >= 10_000 else f"{value:.1f}"


def fmt_pair(pair: Sequence[float], fmt=fmt_ms, sep: str = "–") -> str:
    """'low–high' or '-' when undefined."""
    lo, hi = pair
    return "-" if math.isnan(lo) or math.isnan(hi) else f"{fmt(lo)}{sep}{fmt(hi)}"


def fmt_ci(row: PhaseRow) -> str:
    """The t CI of the mean, 'low – high'."""
    s = row.stats
    return f"{s.ci_low_ms:.1f} – {s.ci_high_ms:.1f}" if s.has_ci else "-"


def fmt_ratio(row: PhaseRow) -> str:
    return "-" if math.isnan(row.ratio) else f"×{row.ratio:.2f}"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_delta(row: PhaseRow) -> str:
    d = row.diff
    if d is None or math.isnan(d.delta_ms):
        return "-"
    ci = fmt_pair(d.delta_ci_ms, lambda v: f"{v:+.1f}", ", ")
    return f"{d.delta_ms:+.1f}" + ("" if ci == "-" else f" [{ci}]")


def fmt_rel(row: PhaseRow) -> str:
    d = row.diff
    if d is None or math.isnan(d.ratio):
        return "-"
    ci = fmt_pair(d.ratio_ci, lambda v: f"{v:.2f}")
    return f"×{d.ratio:.2f}" + ("" if ci == "-" else f" [{ci}]")


def _counts(cmp: Comparison) -> list[str]:
    return [
        f"{d.label}: {d.instances} instances, {d.incomplete} incomplete, "
        f"{d.failures}/{d.requests} requests failed"
        for d in cmp.labels
    ]


def warning_lines(cmp: Comparison) -> list[str]:
    """Statistics' warnings, one line per distinct text with the rows it concerns:
    'text: label (phase, phase), label (every phase)'."""
    groups: dict[str, dict[str, list[str]]] = {}
    for r in cmp.rows:
        for w in r.stats.warnings:
            groups.setdefault(w, {}).setdefault(r.label, []).append(r.phase)
    out = []
    for w, by_label in groups.items():
        parts = []
        for lab, phases in by_label.items():
            have = [p for p in cmp.phases if cmp.stats(p, lab).n > 1]
            which = "every phase" if phases == have else ", ".join(phases)
            parts.append(f"{lab} ({which})")
        out.append(f"{w}: {'; '.join(parts)}")
    return out


def overlap_notes(cmp: Comparison) -> list[str]:
    """One line per label whose breakdown phases overlap in time (the stack over-counts)."""
    out = []
    for d in cmp.labels:
        if d.breakdown_overlaps:
            pairs = ", ".join(f"{a} and {b} in {n}/{d.instances} instances"
                              for (a, b), n in d.breakdown_overlaps.items())
            out.append(f"{d.label}: breakdown phases overlap in time ({pairs}): the stacked "
                       f"breakdown bar over-counts {cmp.model.breakdown_of}")
    return out


def unmeasured_notes(cmp: Comparison) -> list[str]:
    """One line per label and phase that could not be measured, with the reason."""
    return [f"{d.label}: {phase} not measured: {why}"
            for d in cmp.labels for phase, why in d.not_measured.items()]


def validity_notes(cmp: Comparison) -> list[str]:
    """One line per validity flag (report/validity.py): 'label: invalid? code: message'."""
    return [f"{lab}: validity flag {f.code}: {f.message}"
            for lab, flags in cmp.validity.items() for f in flags]


def diff_notes(cmp: Comparison) -> list[str]:
    """Why a verdict is '~' when it is not simply p >= alpha, phases a label lacks, and
    overlapping breakdown phases."""
    out = unmeasured_notes(cmp) + overlap_notes(cmp)
    for r in cmp.rows:
        if r.diff is not None and r.diff.note:
            out.append(f"{r.label}/{r.phase}: {r.diff.note}")
        elif r.stats.note and r.stats.n == 0:
            out.append(f"{r.label}/{r.phase}: {r.stats.note}")
    return out


def _name_width(cmp: Comparison) -> int:
    """Width of the phase / label column: the longest name (indented labels), at most 28."""
    return min(28, max([len(p) for p in cmp.phases] + [len(n) + 2 for n in cmp.label_names]))


def _sections(cmp: Comparison) -> list[tuple[str, list[PhaseRow]]]:
    return [(p, [r for r in cmp.rows if r.phase == p]) for p in cmp.phases]


def stats_table(cmp: Comparison) -> Table:
    """Table 1: n, failures, mean [t CI], median [BCa CI], p95 per phase and label."""
    conf = f"{cmp.confidence:.0%}"
    table = Table(
        title=f"{cmp.model.vim}: phase durations (ms), baseline {cmp.baseline.label}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("phase / label", overflow="fold", max_width=28, min_width=_name_width(cmp))
    table.add_column("n", justify="right")
    table.add_column("fail", justify="right")
    table.add_column("mean", justify="right")
    table.add_column(f"{conf} CI\nof mean", justify="right", no_wrap=True)
    table.add_column("median", justify="right")
    table.add_column(f"{conf} CI\nof median", justify="right", no_wrap=True)
    table.add_column("p95", justify="right")
    secs = _sections(cmp)
    for i, (phase, rows) in enumerate(secs):
        table.add_row(Text(phase, style="bold"))
        for j, r in enumerate(rows):
            s = r.stats
            table.add_row(
                f"  {r.label}",
                str(s.n),
                str(s.failures),
                fmt_ms(s.mean_ms),
                fmt_pair((s.ci_low_ms, s.ci_high_ms)),
                fmt_ms(s.median_ms),
                fmt_pair(s.median_ci_ms),
                fmt_ms(s.p95_ms),
                end_section=(j == len(rows) - 1 and i < len(secs) - 1),
            )
    return table


def diff_table(cmp: Comparison) -> Table:
    """Table 2: each non-baseline label vs the baseline, per phase."""
    conf = f"{cmp.confidence:.0%}"
    table = Table(
        title=f"vs baseline {cmp.baseline.label}: {TEST_NAME}, α={cmp.alpha:g}, "
        f"min effect {cmp.min_effect:.0%} and {cmp.min_effect_ms:g} ms",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("phase / label", overflow="fold", max_width=28, min_width=_name_width(cmp))
    table.add_column(f"Δ median ms [{conf} CI]", justify="right", no_wrap=True)
    table.add_column(f"ratio [{conf} CI]", justify="right", no_wrap=True)
    table.add_column("p", justify="right")
    table.add_column("verdict", justify="center")
    secs = [(p, [r for r in rows if r.diff is not None]) for p, rows in _sections(cmp)]
    for i, (phase, rows) in enumerate(secs):
        table.add_row(Text(phase, style="bold"))
        for j, r in enumerate(rows):
            assert r.diff is not None
            table.add_row(
                f"  {r.label}",
                fmt_delta(r),
                fmt_rel(r),
                fmt_p(r.diff.p_value),
                r.diff.verdict,
                end_section=(j == len(rows) - 1 and i < len(secs) - 1),
            )
    return table


def render_table(cmp: Comparison, console: Console) -> Table:
    """Print the tables, the warm-up rule, counts and notes to `console` (fits 100 columns).

    Returns the phase-durations table.
    """
    table = stats_table(cmp)
    console.print(table)
    if len(cmp.labels) > 1:
        console.print(diff_table(cmp))
    for line in _counts(cmp) + cmp.warmup_texts:
        console.print(line, soft_wrap=False)
    notes = diff_notes(cmp) + warning_lines(cmp) + validity_notes(cmp)
    if notes:
        console.print("notes:")
        for n in notes:
            console.print(f"  {n}", soft_wrap=False)
    return table


def phase_definitions(cmp: Comparison) -> list[tuple[str, str, str, str]]:
    """(phase, from event, to event, source) per phase, the most common in the timelines
    (counted instances of every label); derived totals and the floor are described."""
    out = []
    for phase in cmp.phases:
        seen: Counter[tuple[str, str, str]] = Counter()
        for d in cmp.labels:
            for inst in d.counted:
                p = (inst.record.get("phases") or {}).get(phase)
                if isinstance(p, dict):
                    seen[(str(p.get("from", "?")), str(p.get("to", "?")),
                          str(p.get("source", "?")))] += 1
        if seen:
            out.append((phase, *seen.most_common(1)[0][0]))
        elif phase == FLOOR_PHASE:
            out.append((phase, "hypervisor launch", "guest ready line", "hook (no VIM)"))
        elif phase == cmp.model.total:
            out.append((phase, f"first {cmp.model.stack[0]} start",
                        f"last {cmp.model.stack[-1]} end", "derived"))
    return out


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


STAT_COLUMNS = (
    "phase", "label", "n", "failures", "mean", "sd", "CI of mean", "median", "CI of median",
    "p90", "p95", "CI of p95", "p99", "min", "max",
)


def stat_cells(r: PhaseRow) -> list[str]:
    """The cells of STAT_COLUMNS for one row (ms, one decimal, '-' when undefined)."""
    s = r.stats
    return [
        r.phase, r.label, str(s.n), str(s.failures), fmt_ms(s.mean_ms), fmt_ms(s.std_ms),
        fmt_pair((s.ci_low_ms, s.ci_high_ms)), fmt_ms(s.median_ms), fmt_pair(s.median_ci_ms),
        fmt_ms(s.p90_ms), fmt_ms(s.p95_ms), fmt_pair(s.p95_ci_ms), fmt_ms(s.p99_ms),
        fmt_ms(s.min_ms), fmt_ms(s.max_ms),
    ]


DIFF_COLUMNS = (
    "phase", "label", "median base", "median", "Δ median [CI]", "ratio [CI]", "p", "test",
    "verdict",
)


def diff_cells(r: PhaseRow) -> list[str]:
    """The cells of DIFF_COLUMNS for a non-baseline row."""
    d = r.diff
    assert d is not None
    test = f"MWU {d.method}" if d.method else "-"
    return [
        r.phase, r.label, fmt_ms(d.median_base_ms), fmt_ms(d.median_ms), fmt_delta(r),
        fmt_rel(r), fmt_p(d.p_value), test, d.verdict,
    ]


def _md_table(header: Sequence[str], rows: list[list[str]], right_from: int = 2) -> list[str]:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return out


CHART_TITLES = {
    "phases": "VIM-level phases per label (Ventre et al. Fig. 6 style)",
    "breakdown": "Driver / spawn breakdown per label",
    "cdf": "Distribution of each phase (empirical CDF)",
    "runs": "Latency against run index (warm-up and drift)",
    "gantt": "One instance, every source's events (the median-total instance of each label)",
}


def markdown(
    cmp: Comparison, chart_name: str | None = "phases.png", charts: dict[str, str] | None = None,
    extra_files: dict[str, str] | None = None,
) -> str:
    """The text of report.md (see write_markdown).

    `charts` maps chart keys of CHART_TITLES to relative file names; `chart_name` alone is
    the VIM-level chart (older call style). `extra_files` maps file names to a description.
    """
    charts = dict(charts or {})
    if chart_name and "phases" not in charts:
        charts = {"phases": chart_name, **charts}
    conf = f"{cmp.confidence:.0%}"
    out = [f"# vimprof compare: {', '.join(_md_escape(n) for n in cmp.label_names)}", ""]
    out += [
        f"VIM: {cmp.model.vim}. Baseline: {_md_escape(cmp.baseline.label)}. "
        f"Durations in ms; the {conf} confidence interval of the mean is the Student t "
        f"interval mean ± t(1-α/2, n-1)·s/√n.",
        "",
        f"Methods: {cmp.method_text}",
        "",
        "Warm-up:",
        "",
    ]
    out += [f"- {_md_escape(t)}" for t in cmp.warmup_texts]
    out += [
        "",
        "## Runs",
        "",
        "| label | run directory | instances | warm-up excluded | incomplete | failed requests |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for d in cmp.labels:
        out.append(
            f"| {_md_escape(d.label)} | `{d.run.path}` | {d.instances} | {d.warmup_excluded} "
            f"| {d.incomplete} | {d.failures}/{d.requests} |"
        )
    if cmp.gate_messages:
        out += ["", "## CI gate failed", ""] + [f"- {_md_escape(m)}" for m in cmp.gate_messages]
    if len(cmp.labels) > 1:
        out += ["", "## Verdicts", ""]
        out += _md_table(DIFF_COLUMNS, [diff_cells(r) for r in cmp.rows if r.diff is not None])
    out += [
        "",
        "## Phases",
        "",
        f"| phase | label | n | mean | median | std | {conf} CI of mean | median vs base |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in cmp.rows:
        s = r.stats
        cells = [
            r.phase, r.label, str(s.n), fmt_ms(s.mean_ms), fmt_ms(s.median_ms),
            fmt_ms(s.std_ms), fmt_ci(r), fmt_ratio(r),
        ]
        out.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    out += ["", "## Phase definitions", ""]
    out += _md_table(("phase", "from", "to", "source"),
                     [list(t) for t in phase_definitions(cmp)], right_from=4)
    out += ["", "## All statistics", ""]
    out += _md_table(STAT_COLUMNS, [stat_cells(r) for r in cmp.rows])
    notes = diff_notes(cmp) + warning_lines(cmp) + validity_notes(cmp)
    if notes:
        out += ["", "Notes:", ""] + [f"- {_md_escape(n)}" for n in notes]
    if charts:
        out += ["", "## Charts"]
        for key, name in charts.items():
            base, _, lab = key.partition(":")
            title = CHART_TITLES.get(base, base) + (f" — {lab}" if lab else "")
            out += ["", f"### {title}", ""]
            if key == "phases":
                out += [
                    f"Stacked means of {', '.join(cmp.model.stack)}; whiskers: {conf} CI of "
                    f"each phase mean, at the end of its segment.",
                    "",
                    f"![phase breakdown per label]({name})",
                ]
            else:
                if key == "breakdown":
                    out += [
                        f"Stacked means of {', '.join(cmp.model.breakdown)}, the parts of "
                        f"{cmp.model.breakdown_of}"
                        + (f"; dashed mark: where spawn would end if it took only the "
                           f"hypervisor's own time ({FLOOR_PHASE} mean)." if cmp.has_floor
                           else "."),
                        "",
                    ]
                out.append(f"![{title}]({name})")
    if extra_files:
        out += ["", "## Files", ""]
        out += [f"- `{name}`: {_md_escape(desc)}" for name, desc in extra_files.items()]
    return "\n".join(out) + "\n"


def write_markdown(
    cmp: Comparison, path: Path, chart_name: str | None = "phases.png",
    charts: dict[str, str] | None = None, extra_files: dict[str, str] | None = None,
) -> Path:
    """Write report.md: runs, warm-up, verdicts, every statistic and the charts by path."""
    path = Path(path)
    path.write_text(markdown(cmp, chart_name, charts, extra_files), encoding="utf-8")
    return path
