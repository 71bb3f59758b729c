"""`vimprof.load(RUN)`: a run's timelines as a pandas DataFrame, for notebooks.

One row per instance and phase (the long / "tidy" layout of a report's phases.csv), columns:

    label      the run directory's name
    vim        "nomad" | "nova"
    instance   Nomad allocation id / Nova server uuid
    job        Nomad job id / Nova request id (None when unknown)
    run        0-based run index of the campaign (<NA> when the instance was not one of its
               requests)
    warmup     True for the first campaign.warmup_runs runs of the manifest (reports leave
               them out)
    complete   the instance's timeline has every phase of the VIM's model
    phase      phase name (vimprof/phases.py)
    start_ns   phase start, ns since the Unix epoch (UTC)
    end_ns     phase end, ns since the Unix epoch
    ms         duration, milliseconds
    source     what bounds the phase: capture, hook, vim, client, rally, or two joined by "+"

pandas is an optional extra (`pip install 'vimprof[notebook]'`); it is imported only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vimprof import rundir
from vimprof.errors import VimprofError
from vimprof.schema import check_readable

COLUMNS = ("label", "vim", "instance", "job", "run", "warmup", "complete", "phase",
           "start_ns", "end_ns", "ms", "source")
DTYPES = {"run": "Int64", "warmup": "bool", "complete": "bool", "start_ns": "Int64",
          "end_ns": "Int64", "ms": "float64"}


class NotebookExtraMissing(ImportError):
    """pandas is not installed: vimprof.load needs the `notebook` extra."""


def _pandas():
    try:
        import pandas
    except ImportError as exc:
        raise NotebookExtraMissing(
            "vimprof.load needs pandas, which vimprof does not install by default: "
            "pip install 'vimprof[notebook]'") from exc
    return pandas


def _warmup_runs(manifest: dict[str, Any], where: Path) -> int:
    campaign = manifest.get("campaign") if isinstance(manifest.get("campaign"), dict) else {}
    value = campaign.get("warmup_runs", 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise VimprofError(f"{where}: campaign.warmup_runs must be a non-negative integer, "
                           f"got {value!r}")
    return value


def rows(run: rundir.RunDir) -> list[dict[str, Any]]:
    """The DataFrame's rows as dicts (see the module docstring)."""
    manifest = run.manifest()
    warmup = _warmup_runs(manifest, run.file(rundir.MANIFEST))
    out = []
    for tl in run.read(rundir.TIMELINES):
        if not isinstance(tl, dict):
            continue
        r = tl.get("run")
        r = r if isinstance(r, int) and not isinstance(r, bool) else None
        base = {"label": run.label, "vim": tl.get("vim"), "instance": tl.get("instance"),
                "job": tl.get("job"), "run": r,
                "warmup": r is not None and r < warmup, "complete": bool(tl.get("complete"))}
        phases = tl.get("phases") if isinstance(tl.get("phases"), dict) else {}
        for name, p in phases.items():
            if not isinstance(p, dict):
                continue
            out.append({**base, "phase": name, "start_ns": p.get("start_ns"),
                        "end_ns": p.get("end_ns"), "ms": p.get("ms"),
                        "source": p.get("source")})
    return out


def load(run: str | Path | rundir.RunDir, runs_dir: Path | str | None = None):
    """The timelines of `run` (a run directory, or a label under `runs_dir`, default runs/)
    as a pandas DataFrame, one row per instance and phase (module docstring).

    Raises NotebookExtraMissing (an ImportError) without pandas; SchemaVersionError for a run
    directory of a schema version this vimprof does not read; VimprofError when the run
    directory or its timelines.jsonl does not exist.
    """
    pd = _pandas()
    if not isinstance(run, rundir.RunDir):
        root = Path(runs_dir) if runs_dir is not None else rundir.DEFAULT_RUNS_ROOT
        run = rundir.RunDir.resolve(str(run), root)
    check_readable(run)
    if not run.file(rundir.TIMELINES).is_file():
        raise VimprofError(f"{run.path} has no {rundir.TIMELINES}: run `vimprof analyze "
                           f"{run.path}` first")
    frame = pd.DataFrame(rows(run), columns=list(COLUMNS))
    return frame.astype(DTYPES)
