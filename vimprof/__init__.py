"""vimprof: VIM instantiation-latency profiler for micro-VNFs."""

from __future__ import annotations

from vimprof.version import __version__

__all__ = ["__version__", "load"]


def load(run, runs_dir=None):
    """The timelines of run directory `run` (a path, or a label under `runs_dir`, default
    runs/) as a pandas DataFrame: one row per instance and phase, columns label, vim,
    instance, job, run, warmup, complete, phase, start_ns, end_ns, ms, source
    (vimprof/notebook.py).

    Needs pandas (`pip install 'vimprof[notebook]'`; without it an ImportError says so).
    Refuses a run directory of a schema version this vimprof does not read.
    """
    from vimprof.notebook import load as _load

    return _load(run, runs_dir)
