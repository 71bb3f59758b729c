"""`vimprof rally task|run|import` (registered on vimprof's CLI by vimprof/cli.py)."""

from __future__ import annotations

import secrets
import shlex
from pathlib import Path

import click
from rich.console import Console

from vimprof import rundir
from vimprof.errors import VimprofError

console = Console(highlight=False, soft_wrap=True)


def _task_options(f):
    for opt in reversed([
        click.option("--runs", "-n", type=click.IntRange(min=1), default=10, show_default=True,
                     help="Iterations (server boots) of the Rally workload."),
        click.option("--concurrency", "-c", type=click.IntRange(min=1), default=1,
                     show_default=True, help="Iterations in flight at once (runner constant)."),
        click.option("--os-cloud", metavar="NAME",
                     help="An existing cloud from clouds.yaml (default: the running Nova lab's "
                          "admin and its diskless image and flavor)."),
        click.option("--image", metavar="ID|NAME", help="With --os-cloud: the image to boot."),
        click.option("--flavor", metavar="ID|NAME", help="With --os-cloud: the flavor."),
        click.option("--poll-ms", type=float, default=50.0, show_default=True,
                     help="Interval of the GET /servers/{id} polls."),
        click.option("--timeout", "timeout_s", type=float, default=120.0, show_default=True,
                     help="Seconds to wait for ACTIVE, and for the 404 after the delete."),
        click.option("--microversion", default="2.52", show_default=True,
                     help="Compute API microversion (>= 2.37: networks 'none').")]):
        f = opt(f)
    return f


def _generate(out: Path, runs: int, concurrency: int, os_cloud: str | None, image: str | None,
              flavor: str | None, poll_ms: float, timeout_s: float, microversion: str,
              env_name: str) -> list[list[str]]:
    from vimprof.rally import task as rtask

    if os_cloud:
        if not image or not flavor:
            raise VimprofError("--os-cloud needs --image and --flavor (ids or names)")
        cloud = rtask.cloud_from_clouds_yaml(os_cloud)
        target = {"image": image, "flavor": flavor}
    else:
        if image or flavor:
            raise VimprofError("--image and --flavor apply with --os-cloud; the lab uses its "
                               "diskless image and flavor vimprof-micro")
        cloud, target = rtask.lab_cloud()
    spec = rtask.TaskSpec(runs=runs, concurrency=concurrency, image=target["image"],
                          flavor=target["flavor"], poll_ms=poll_ms, timeout_s=timeout_s,
                          microversion=microversion)
    return rtask.write_task_dir(out, spec, cloud, env_name)


@click.group()
def rally() -> None:
    """OpenStack Rally against Nova: task files, runs, and Rally reports as run directories.

    Rally runs from its own venv (scripts/setup-rally) with vimprof's scenario plugin
    VimprofNova.boot_and_delete_microvnf (vimprof/rally/plugin.py)."""


@rally.command("task")
@_task_options
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Directory for task.json, env.json (0600), rally.conf, commands.sh.")
def task_cmd(runs: int, concurrency: int, os_cloud: str | None, image: str | None,
             flavor: str | None, poll_ms: float, timeout_s: float, microversion: str,
             out: Path) -> None:
    """Write the Rally task file and environment spec, print the `rally` commands to run."""
    env_name = f"vimprof-{secrets.token_hex(3)}"
    cmds = _generate(out, runs, concurrency, os_cloud, image, flavor, poll_ms, timeout_s,
                     microversion, env_name)
    console.print(f"wrote {out}/task.json, env.json, rally.conf, commands.sh; run:")
    for c in cmds:
        click.echo(shlex.join(c))
    console.print(f"then: vimprof rally import {out}/report.json --label LABEL")


@rally.command("run")
@_task_options
@click.option("--label", "-l", required=True, help="Run directory to import into (runs/LABEL).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Task directory (default: runs/LABEL.rally).")
@click.option("--warmup", "warmup_runs", type=click.IntRange(min=0), default=0,
              show_default=True, help="First iterations declared warm-up in the run directory.")
@click.option("--force", is_flag=True, help="Overwrite an existing run directory.")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=rundir.DEFAULT_RUNS_ROOT,
              show_default=True, help="Where run directories live.")
def run_cmd(runs: int, concurrency: int, os_cloud: str | None, image: str | None,
            flavor: str | None, poll_ms: float, timeout_s: float, microversion: str,
            label: str, out: Path | None, warmup_runs: int, force: bool,
            runs_dir: Path) -> None:
    """Generate the task, run it in Rally's venv (db, env, task start, JSON report) and import
    the report as run directory LABEL."""
    from vimprof.rally import importer
    from vimprof.rally import task as rtask

    rtask.rally_binary()
    if warmup_runs >= runs:
        raise VimprofError(f"--warmup {warmup_runs} leaves no measured run of {runs}")
    target = runs_dir / label
    if target.exists() and any(target.iterdir()) and not force:
        raise VimprofError(f"{target} already holds a campaign; pick another --label or pass "
                           "--force")
    out = out or runs_dir / f"{label}.rally"
    env_name = f"vimprof-{label}-{secrets.token_hex(3)}"
    cmds = _generate(out, runs, concurrency, os_cloud, image, flavor, poll_ms, timeout_s,
                     microversion, env_name)
    report = rtask.run_commands(cmds, out, echo=lambda s: console.print(s, markup=False))
    run = importer.import_report(report, label, runs_dir, warmup_runs=warmup_runs, force=force)
    _imported(run)


@rally.command("import")
@click.argument("report", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--label", "-l", required=True, help="Name of the run directory (runs/LABEL).")
@click.option("--task", "task_uuid", metavar="UUID",
              help="The task to import when the report holds several (default: the last).")
@click.option("--warmup", "warmup_runs", type=click.IntRange(min=0), default=0,
              show_default=True, help="First iterations declared warm-up (left out of reports).")
@click.option("--force", is_flag=True, help="Overwrite an existing run directory.")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=rundir.DEFAULT_RUNS_ROOT,
              show_default=True, help="Where run directories live.")
def import_cmd(report: Path, label: str, task_uuid: str | None, warmup_runs: int, force: bool,
               runs_dir: Path) -> None:
    """Turn Rally's JSON report (`rally task report --json`) into run directory LABEL
    (manifest.json source rally, requests.jsonl, timelines.jsonl) for `vimprof compare`."""
    from vimprof.rally import importer

    run = importer.import_report(report, label, runs_dir, warmup_runs=warmup_runs, force=force,
                                 task_uuid=task_uuid)
    _imported(run)


def _imported(run: rundir.RunDir) -> None:
    m = run.manifest()
    camp = m.get("campaign") or {}
    console.print(f"imported Rally task {camp.get('id')}: {camp.get('runs')} iteration(s), "
                  f"{m.get('failures')} failed, into {run.path}; compare with "
                  f"`vimprof compare OTHER {run.label}`")
