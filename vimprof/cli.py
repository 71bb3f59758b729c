"""vimprof's command line. Thin: it parses options and wires commands to modules.

Every user-actionable failure is a VimprofError: one line on stderr, exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from vimprof import __version__, rundir
from vimprof.errors import VimprofError

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

runs_dir_option = click.option(
    "--runs-dir", type=click.Path(path_type=Path), default=rundir.DEFAULT_RUNS_ROOT,
    show_default=True, help="Where run directories live (labels resolve under it).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vimprof")
def cli() -> None:
    """Profile how fast a VIM (Nomad, OpenStack Nova) instantiates micro-VNFs, and where the
    time goes."""


@cli.command()
@click.option("--vim", type=click.Choice(["nomad"]), default="nomad", show_default=True)
@click.option("--runs", "-n", type=click.IntRange(min=1), default=10, show_default=True,
              help="Sequential instantiations, each cleaned up before the next.")
@click.option("--label", "-l", required=True, help="Name of the run directory (runs/LABEL).")
@click.option("--nomad-addr", metavar="URL",
              help="An existing Nomad cluster (default: the embedded lab, started if needed).")
@click.option("--capture-iface", metavar="IFACE",
              help="With --nomad-addr: the interface to capture on (default: no capture).")
@click.option("--kernel", metavar="PATH",
              help="With --nomad-addr: the micro-VNF kernel path on the Nomad client.")
@click.option("--accel", type=click.Choice(["auto", "tcg", "kvm"]), default="auto",
              show_default=True, help="QEMU accelerator for the guests (auto: measured).")
@click.option("--memory-mb", type=click.IntRange(min=128), default=128, show_default=True,
              help="Guest memory (Nomad's qemu driver needs at least 128).")
@click.option("--timeout", "timeout_s", type=float, default=60.0, show_default=True,
              help="Seconds to wait for an allocation to run or stop before failing the run.")
@click.option("--driver", type=click.Choice(["qemu", "xen-stock", "xen-tuned"]), default="qemu",
              show_default=True,
              help="Nomad's built-in qemu driver, or vimprof's micro-VNF driver plugin (xen) in "
                   "its stock (artifact, executor) or tuned (local image, direct spawn) variant.")
@click.option("--nomad", "nomad_variant", type=click.Choice(["stock", "tuned"]), default="stock",
              show_default=True,
              help="Lab only: Nomad as released, or the reactive build (no lazy notification).")
@click.option("--warmup", "warmup_runs", type=click.IntRange(min=0), default=0,
              show_default=True, help="First runs declared warm-up: recorded, left out of reports.")
@click.option("--floor/--no-floor", default=None,
              help="After each run, boot the guest directly (no VIM) as the spawn floor "
                   "[default: on with the xen driver].")
@click.option("--force", is_flag=True, help="Overwrite an existing run directory.")
@click.option("--no-analyze", is_flag=True, help="Skip `vimprof analyze` at the end.")
@runs_dir_option
def capture(vim: str, runs: int, label: str, nomad_addr: str | None, capture_iface: str | None,
            kernel: str | None, accel: str, memory_mb: int, timeout_s: float, driver: str,
            nomad_variant: str, warmup_runs: int, floor: bool | None, force: bool,
            no_analyze: bool, runs_dir: Path) -> None:
    """Run a campaign of RUNS instantiations and record it into runs/LABEL."""
    from vimprof import campaign

    if nomad_addr:
        if not kernel:
            raise VimprofError("--nomad-addr needs --kernel: the micro-VNF kernel on the client")
        if driver != "qemu" or nomad_variant != "stock":
            raise VimprofError("--driver xen-* and --nomad tuned need the embedded lab (the "
                               "plugin's hooks file and the Nomad build are set up by it)")
        target = campaign.remote_target(nomad_addr, kernel, accel, capture_iface)
    else:
        if capture_iface or kernel:
            raise VimprofError("--capture-iface and --kernel only apply with --nomad-addr")
        target = campaign.lab_target(accel, console, nomad_variant, driver)
    if warmup_runs >= runs:
        raise VimprofError(f"--warmup {warmup_runs} leaves no measured run of {runs}")
    run = rundir.RunDir.create(label, runs_dir, force=force)
    spec = campaign.CampaignSpec(label=label, runs=runs, memory_mb=memory_mb, timeout_s=timeout_s,
                                 driver=driver, warmup_runs=warmup_runs,
                                 floor=driver != "qemu" if floor is None else floor)
    console.print(f"campaign [bold]{label}[/]: {runs} run(s) against Nomad "
                  f"({target.nomad_variant}) at {target.nomad_addr} ({driver} driver, "
                  f"{target.accelerator}, {memory_mb} MB)")
    failures = campaign.run_campaign(spec, target, run, console)
    if failures:
        where = run.file(rundir.REQUESTS)
        console.print(f"[yellow]{failures} of {runs} run(s) failed; see {where}")
    if not no_analyze and target.capture_iface:
        _analyze(run)
    console.print(f"run directory: {run.path}")


@cli.command()
@click.argument("run")
@runs_dir_option
def analyze(run: str, runs_dir: Path) -> None:
    """Rebuild per-instance phase timelines of RUN (a directory or a label) from its capture."""
    _analyze(rundir.RunDir.resolve(run, runs_dir))


def _analyze(run: rundir.RunDir) -> None:
    from vimprof.analyzer import analyze_run

    result = analyze_run(run)
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"analyzed {run.file(rundir.CAPTURE)}: {result.summary()}")


@cli.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", type=click.Path(path_type=Path),
              help="Report directory (default: reports/A-vs-B).")
@runs_dir_option
def compare(runs: tuple[str, ...], out: Path | None, runs_dir: Path) -> None:
    """Compare phases of two or more runs; the first is the baseline.

    Writes a terminal table, report.md and a phase-breakdown chart.
    """
    from vimprof.report import write_report

    if len(runs) < 2:
        raise VimprofError("compare needs at least two runs, e.g. `vimprof compare stock tuned`")
    dirs = [rundir.RunDir.resolve(r, runs_dir) for r in runs]
    out = out or Path("reports") / "-vs-".join(d.label for d in dirs)
    out.mkdir(parents=True, exist_ok=True)
    write_report(dirs, out, console)
    console.print(f"report: {out / 'report.md'}")


@cli.group()
def lab() -> None:
    """Bring up, inspect or tear down a real VIM on this machine."""


@lab.command("up")
@click.argument("vim", type=click.Choice(["nomad"]))
@click.option("--accel", type=click.Choice(["auto", "tcg", "kvm"]), default="auto",
              show_default=True, help="Default QEMU accelerator of the lab (auto: measured).")
@click.option("--nomad", "nomad_variant", type=click.Choice(["stock", "tuned"]), default="stock",
              show_default=True, help="Nomad as released, or the reactive build.")
@click.option("--driver", "driver_variant", type=click.Choice(["stock", "tuned"]),
              default="stock", show_default=True,
              help="Variant of the micro-VNF driver plugin (xen) the client loads.")
def lab_up(vim: str, accel: str, nomad_variant: str, driver_variant: str) -> None:
    """Start a Nomad server (netns hostc) and client (netns hostl) joined by a veth pair."""
    from vimprof.lab import nomad as nomad_lab

    state = nomad_lab.up(accelerator=accel, nomad_variant=nomad_variant,
                         driver_variant=driver_variant)
    plugin = (f"xen driver {state.driver_variant}" if state.driver_variant
              else "no xen driver (run scripts/setup)")
    console.print(f"Nomad lab up: {state.nomad_version} ({state.nomad_variant}), "
                  f"API {state.http_addr}, guests on QEMU/{state.accelerator}, {plugin}; "
                  f"state in {state.lab_dir}")


@lab.command("down")
@click.argument("vim", type=click.Choice(["nomad"]))
def lab_down(vim: str) -> None:
    """Stop the lab: agents, guests, namespaces. Leaves nothing behind."""
    from vimprof.lab import nomad as nomad_lab

    for line in nomad_lab.down() or ["nothing was running"]:
        console.print(line)


@lab.command("status")
@click.argument("vim", type=click.Choice(["nomad"]))
def lab_status(vim: str) -> None:
    """Show whether the lab runs, its leader, node and guests."""
    from vimprof.lab import nomad as nomad_lab

    for key, value in nomad_lab.status().items():
        console.print(f"{key:>15}: {value}")


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except VimprofError as exc:
        err_console.print(f"[red]vimprof: error:[/] {exc}", soft_wrap=True)
        sys.exit(2)
    except click.exceptions.Abort:
        err_console.print("vimprof: interrupted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
