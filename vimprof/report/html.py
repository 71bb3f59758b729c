"""report.html: one self-contained page (inline CSS and SVG charts, no script, no network).

Top to bottom: what changed (the verdicts that are not "~"), where the time goes (each
label's share of the stack phases), the warm-up rule and the methods, the charts, the verdict
table, every statistic, the runs and notes, and the other files of the report.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from vimprof.report.compare import FASTER, FLOOR_PHASE, SLOWER, TEST_NAME, Comparison
from vimprof.report.render import (
    CHART_TITLES,
    DIFF_COLUMNS,
    STAT_COLUMNS,
    diff_cells,
    diff_notes,
    fmt_ms,
    fmt_p,
    phase_definitions,
    stat_cells,
    validity_notes,
    warning_lines,
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.2em .5em;text-align:right;white-space:nowrap}
th{background:#f4f4f4}td.l,th.l{text-align:left}
td.faster{background:#d9f2d9;font-weight:bold}td.slower{background:#f8d7d7;font-weight:bold}
.box{background:#f8f8f8;border-left:4px solid #888;padding:.5em 1em;margin:1em 0}
figure{margin:1em 0}figure svg{max-width:100%;height:auto}
figcaption{font-size:.9em;color:#555}code{background:#f2f2f2;padding:0 .2em}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _p_eq(p: float) -> str:
    text = fmt_p(p)
    return text if text.startswith("<") else f"={text}"


def changes(cmp: Comparison) -> list[str]:
    """Plain-text sentences, one per (phase, label) whose verdict is faster or slower, the
    largest absolute change of the median first."""
    rows = [r for r in cmp.rows if r.diff is not None and r.diff.verdict in (FASTER, SLOWER)]
    rows.sort(key=lambda r: -abs(r.diff.delta_ms))  # type: ignore[union-attr]
    out = []
    for r in rows:
        d = r.diff
        assert d is not None
        out.append(
            f"{r.phase}: {r.label} is {d.verdict} than {d.base_label} by "
            f"{abs(d.change_pct):.1f}% (median {fmt_ms(d.median_base_ms)} → "
            f"{fmt_ms(d.median_ms)} ms, Δ {d.delta_ms:+.1f} ms, p{_p_eq(d.p_value)})"
        )
    return out


def where_time_goes(cmp: Comparison) -> list[str]:
    """Per label: the total's median and each stack phase's share of the summed stack means."""
    out = []
    for lab in cmp.label_names:
        means = {p: cmp.stats(p, lab).mean_ms for p in cmp.model.stack}
        known = {p: m for p, m in means.items() if not math.isnan(m)}
        s = sum(known.values())
        tot = cmp.stats(cmp.model.total, lab)
        if not known or s <= 0:
            out.append(f"{lab}: no stack phase measured")
            continue
        shares = ", ".join(f"{p} {m:.1f} ms ({m / s:.0%})" for p, m in known.items())
        out.append(f"{lab}: {cmp.model.total} median {fmt_ms(tot.median_ms)} ms; mean {shares}")
        skip = {*cmp.model.stack, *cmp.model.breakdown, cmp.model.total, FLOOR_PHASE}
        other = sorted(
            ((p, cmp.stats(p, lab).mean_ms) for p in cmp.phases if p not in skip),
            key=lambda pm: -pm[1] if not math.isnan(pm[1]) else 0.0,
        )
        other = [(p, m) for p, m in other if not math.isnan(m)][:3]
        if other:
            out[-1] += "; largest other phases: " + ", ".join(
                f"{p} {m:.1f} ms" for p, m in other
            )
        if FLOOR_PHASE in cmp.phases and cmp.stats(FLOOR_PHASE, lab).n:
            out[-1] += (f"; the hypervisor alone ({FLOOR_PHASE}) takes "
                        f"{cmp.stats(FLOOR_PHASE, lab).mean_ms:.1f} ms on average")
        if cmp.has_breakdown():
            bd = {p: cmp.stats(p, lab).mean_ms for p in cmp.model.breakdown if p in cmp.phases}
            bd = {p: m for p, m in bd.items() if not math.isnan(m)}
            if bd:
                out[-1] += "; " + cmp.model.breakdown_of + " = " + ", ".join(
                    f"{p} {m:.1f} ms" for p, m in bd.items()
                )
    return out


def _table(header: tuple[str, ...], rows: list[list[str]], left: int = 2,
           verdict_col: int | None = None) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{_e(h)}</th>'
                 for i, h in enumerate(header))
    body = []
    for row in rows:
        tds = []
        for i, c in enumerate(row):
            cls = "l" if i < left else ""
            if verdict_col is not None and i == verdict_col and c in (FASTER, SLOWER):
                cls = c
            tds.append(f'<td class="{cls}">{_e(c)}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _ul(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>"


def page(
    cmp: Comparison, svgs: dict[str, str], files: dict[str, str] | None = None,
    gate_messages: list[str] | None = None,
) -> str:
    """The HTML text. `svgs` maps chart keys (render.CHART_TITLES, or 'gantt:<label>') to
    inline <svg> text; `files` maps relative file names to a description."""
    title = f"vimprof compare: {', '.join(cmp.label_names)}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>VIM: <b>{_e(cmp.model.vim)}</b>. Baseline: <b>{_e(cmp.baseline.label)}</b>. "
        "Durations in ms.</p>",
    ]
    ch = changes(cmp)
    if len(cmp.labels) > 1:
        parts.append('<div class="box"><b>What changed</b> '
                     f"({_e(TEST_NAME)}, α = {cmp.alpha:g}, minimum effect "
                     f"{cmp.min_effect:.0%} and {cmp.min_effect_ms:g} ms):")
        parts.append(_ul(ch) if ch else "<p>No phase differs significantly from the baseline "
                     "by at least the minimum effect (every verdict is “~”).</p>")
        parts.append("</div>")
    if gate_messages:
        parts.append('<div class="box"><b>CI gate failed</b>' + _ul(gate_messages) + "</div>")
    parts.append('<div class="box"><b>Where the time goes</b>'
                 + _ul(where_time_goes(cmp)) + "</div>")
    parts.append("<p><b>Warm-up.</b></p>" + _ul(cmp.warmup_texts))
    parts.append(f"<p><b>Methods.</b> {_e(cmp.method_text)}</p>")
    parts.append("<h2>Charts</h2>")
    for key, svg in svgs.items():
        base, _, lab = key.partition(":")
        cap = CHART_TITLES.get(base, base) + (f" — {lab}" if lab else "")
        parts.append(f"<figure>{svg}<figcaption>{_e(cap)}</figcaption></figure>")
    if len(cmp.labels) > 1:
        parts.append(f"<h2>Verdicts against {_e(cmp.baseline.label)}</h2>")
        rows = [diff_cells(r) for r in cmp.rows if r.diff is not None]
        parts.append(_table(DIFF_COLUMNS, rows, verdict_col=len(DIFF_COLUMNS) - 1))
    parts.append("<h2>Phase definitions</h2>")
    parts.append(_table(("phase", "from", "to", "source"),
                        [list(t) for t in phase_definitions(cmp)], left=4))
    parts.append("<h2>Statistics</h2>")
    parts.append(_table(STAT_COLUMNS, [stat_cells(r) for r in cmp.rows]))
    parts.append("<h2>Runs</h2>")
    parts.append(_table(
        ("label", "run directory", "instances", "warm-up excluded", "incomplete",
         "failed requests"),
        [[d.label, str(d.run.path), str(d.instances), str(d.warmup_excluded),
          str(d.incomplete), f"{d.failures}/{d.requests}"] for d in cmp.labels],
    ))
    notes = diff_notes(cmp) + warning_lines(cmp) + validity_notes(cmp)
    if notes:
        parts.append("<h2>Notes</h2>" + _ul(notes))
    if files:
        parts.append("<h2>Files</h2><ul>" + "".join(
            f'<li><a href="{_e(n)}"><code>{_e(n)}</code></a>: {_e(desc)}</li>'
            for n, desc in files.items()) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html(
    cmp: Comparison, path: Path, svgs: dict[str, str], files: dict[str, str] | None = None,
    gate_messages: list[str] | None = None,
) -> Path:
    """Write report.html (see page())."""
    path = Path(path)
    path.write_text(page(cmp, svgs, files, gate_messages), encoding="utf-8")
    return path
