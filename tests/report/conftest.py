"""Run directories with synthetic timelines.jsonl records of the documented shape (phases.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from vimprof.rundir import RunDir

T0_NS = 1_700_000_000 * 10**9


def timeline(
    i: int,
    durations_ms: dict[str, float],
    vim: str = "nomad",
    complete: bool = True,
    with_total: bool = False,
) -> dict:
    """One timeline record; the durations are laid end to end starting at instance i's slot."""
    t = T0_NS + i * 10 * 10**9
    phases = {}
    for name, ms in durations_ms.items():
        end = t + int(round(ms * 1e6))
        phases[name] = {
            "start_ns": t,
            "end_ns": end,
            "ms": (end - t) / 1e6,
            "from": f"{name} start",
            "to": f"{name} end",
            "source": "capture",
        }
        t = end
    if with_total and phases:
        first, last = next(iter(phases.values())), phases[list(phases)[-1]]
        phases["total"] = {
            "start_ns": first["start_ns"],
            "end_ns": last["end_ns"],
            "ms": (last["end_ns"] - first["start_ns"]) / 1e6,
            "from": "a",
            "to": "b",
            "source": "capture",
        }
    return {
        "vim": vim,
        "instance": f"alloc-{i}",
        "job": f"job-{i}",
        "run": i,
        "complete": complete,
        "issues": [] if complete else ["no Node.UpdateAlloc"],
        "events": [],
        "phases": phases,
    }


def write_jsonl(path: Path, records: Sequence[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


MakeRun = Callable[..., RunDir]


@pytest.fixture
def make_timeline() -> Callable[..., dict]:
    """The `timeline` record builder, for tests that write records by hand."""
    return timeline


@pytest.fixture
def make_run(tmp_path: Path) -> MakeRun:
    """make_run(label, n, means={"scheduling": 50, ...}, sd=..., seed=...) -> RunDir.

    Durations are normal(mean, sd) from numpy with a fixed seed, clipped to stay positive.
    `records` overrides the generated timelines; `requests` is written to requests.jsonl,
    `hooks` to hooks.jsonl and `manifest` to manifest.json.
    """

    def make(
        label: str,
        n: int = 30,
        means: dict[str, float] | None = None,
        sd: float = 5.0,
        seed: int = 0,
        vim: str = "nomad",
        records: Sequence[dict] | None = None,
        requests: Sequence[dict] | None = None,
        manifest: dict | None = None,
        hooks: Sequence[dict] | None = None,
    ) -> RunDir:
        means = means or {"scheduling": 50.0, "instantiation": 280.0}
        d = tmp_path / "runs" / label
        d.mkdir(parents=True)
        if records is None:
            rng = np.random.default_rng(seed)
            records = [
                timeline(
                    i, {p: max(0.1, float(rng.normal(m, sd))) for p, m in means.items()}, vim=vim
                )
                for i in range(n)
            ]
        write_jsonl(d / "timelines.jsonl", records)
        if requests is not None:
            write_jsonl(d / "requests.jsonl", requests)
        if hooks is not None:
            write_jsonl(d / "hooks.jsonl", hooks)
        if manifest is not None:
            (d / "manifest.json").write_text(json.dumps(manifest))
        return RunDir(d)

    return make


def floor_hook(run: int, ms: float, t_ns: int = T0_NS) -> dict:
    """A hooks.jsonl floor-probe record of `ms` for campaign run `run`."""
    return {"probe": "floor", "hook": "spawn", "t_ns": t_ns, "end_ns": t_ns + int(ms * 1e6),
            "run": run, "backend": "qemu"}


@pytest.fixture
def make_floor_hook() -> Callable[..., dict]:
    return floor_hook
