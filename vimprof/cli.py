"""vimprof's command line. Thin: it parses options and wires commands to modules.

Every user-actionable failure is a VimprofError: one line on stderr, exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from vimprof import __version__, interrupts, rundir
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
@click.option("--vim", type=click.Choice(["nomad", "nova"]), default="nomad", show_default=True)
@click.option("--runs", "-n", type=click.IntRange(min=1), default=10, show_default=True,
              help="Sequential instantiations, each cleaned up before the next.")
@click.option("--label", "-l", required=True, help="Name of the run directory (runs/LABEL).")
@click.option("--nomad-addr", metavar="URL",
              help="An existing Nomad cluster (default: the embedded lab, started if needed).")
@click.option("--capture-iface", metavar="IFACE",
              help="With --nomad-addr: the interface to capture on (default: no capture).")
@click.option("--kernel", metavar="PATH",
              help="With --nomad-addr: the micro-VNF kernel path on the Nomad client.")
@click.option("--job", "job_file", type=click.Path(path_type=Path), metavar="FILE",
              help="With --nomad-addr: your own jobspec (HCL2 or JSON) as the instance instead "
                   "of the built-in micro-VNF; renamed and tagged per run.")
@click.option("--job-group", metavar="NAME",
              help="With --job: the task group whose allocation is the measured instance "
                   "(needed when the job has several groups or a count above 1).")
@click.option("--token", metavar="TOKEN", help="With --nomad-addr: ACL token [env NOMAD_TOKEN].")
@click.option("--http-port", "http_ports", type=int, multiple=True, metavar="PORT",
              help="With --nomad-addr: the cluster's HTTP port if not 4646 (capture filter, "
                   "analysis). Repeatable.")
@click.option("--rpc-port", "rpc_ports", type=int, multiple=True, metavar="PORT",
              help="With --nomad-addr: the cluster's RPC port if not 4647. Repeatable.")
@click.option("--ca-cert", metavar="PEM", help="CA of the cluster's TLS [env NOMAD_CACERT].")
@click.option("--client-cert", metavar="PEM",
              help="TLS client certificate [env NOMAD_CLIENT_CERT].")
@click.option("--client-key", metavar="PEM", help="Its key [env NOMAD_CLIENT_KEY].")
@click.option("--tls-server-name", metavar="NAME",
              help="Name the server certificate is checked against [env NOMAD_TLS_SERVER_NAME].")
@click.option("--accel", type=click.Choice(["auto", "tcg", "kvm"]), default="auto",
              show_default=True, help="QEMU accelerator for the guests (auto: measured).")
@click.option("--memory-mb", type=click.IntRange(min=4), default=None,
              help="Guest memory [default: 128, Nomad's qemu driver's and the qemu backend's "
                   "minimum; 32 with --backend xl, what the PV test guest needs].")
@click.option("--timeout", "timeout_s", type=float, default=60.0, show_default=True,
              help="Seconds to wait for an allocation to run or stop before failing the run.")
@click.option("--driver", type=click.Choice(["qemu", "xen-stock", "xen-tuned"]), default="qemu",
              show_default=True,
              help="Nomad's built-in qemu driver, or vimprof's micro-VNF driver plugin (xen) in "
                   "its stock (artifact, executor) or tuned (local image, direct spawn) variant.")
@click.option("--nomad", "nomad_variant", type=click.Choice(["stock", "tuned"]), default="stock",
              show_default=True,
              help="Lab only: Nomad as released, or the reactive build (no lazy notification).")
@click.option("--backend", type=click.Choice(["qemu", "xl"]), default="qemu", show_default=True,
              help="The xen driver's backend. xl: Nomad on Xen, the client with the plugin in "
                   "the Xen lab's dom0 (brought up with the Nomad lab), PV guests via xl.")
@click.option("--warmup", "warmup_runs", type=click.IntRange(min=0), default=0,
              show_default=True, help="First runs declared warm-up: recorded, left out of reports.")
@click.option("--arrival", default="sequential", show_default=True, metavar="SPEC",
              help="How requests arrive: sequential, closed:C (C clients, each waits "
                   "for its instance), rate:R or poisson:R (open loop, R requests/s, sent on "
                   "schedule whether or not earlier ones finished), burst:N@T, ramps "
                   "rate:1..20/60s, poisson:1..20/60s.")
@click.option("--max-in-flight", type=click.IntRange(min=1), default=16, show_default=True,
              help="Open/closed loop: stop cleanly, keeping what was measured, when more "
                   "instances are in flight (the VIM falls behind).")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0.1), default=None,
              metavar="S", help="Open/closed loop: stop sending after S seconds (beside --runs).")
@click.option("--seed", type=int, default=None, help="Seed of Poisson arrivals (recorded).")
@click.option("--lifetime", "lifetime_s", type=click.FloatRange(min=0), default=0.0,
              show_default=True, metavar="S",
              help="Each instance stays S seconds after it runs, then is deleted.")
@click.option("--keep", is_flag=True,
              help="Every instance stays until the campaign ends, then all are deleted.")
@click.option("--floor/--no-floor", default=None,
              help="After each run, boot the guest directly (no VIM) as the spawn floor "
                   "[default: on with the xen driver].")
@click.option("--nova-driver", type=click.Choice(["stock", "tuned"]), default="stock",
              show_default=True, help="nova: boot the raw root image with kernel_id (Nova's own "
              "spawn) or the diskless image through vimprof's driver in tuned mode.")
@click.option("--os-cloud", metavar="NAME",
              help="nova: an existing cloud from clouds.yaml (default: the embedded lab).")
@click.option("--image", metavar="ID|NAME", help="nova with --os-cloud: the image to boot.")
@click.option("--flavor", metavar="ID|NAME", help="nova with --os-cloud: the flavor.")
@click.option("--poll-ms", type=float, default=50.0, show_default=True,
              help="nova: interval of the GET /servers/{id} polls.")
@click.option("--force", is_flag=True, help="Overwrite an existing run directory.")
@click.option("--no-analyze", is_flag=True, help="Skip `vimprof analyze` at the end.")
@click.option("--live", is_flag=True,
              help="Nomad: analyse the capture while the campaign runs, printing each instance "
                   "as it finishes (as `vimprof analyze --follow`), instead of at the end.")
@runs_dir_option
def capture(vim: str, runs: int, label: str, nomad_addr: str | None, capture_iface: str | None,
            kernel: str | None, accel: str, memory_mb: int | None, timeout_s: float, driver: str,
            nomad_variant: str, warmup_runs: int, floor: bool | None, force: bool,
            no_analyze: bool, runs_dir: Path, nova_driver: str = "stock",
            os_cloud: str | None = None, image: str | None = None, flavor: str | None = None,
            poll_ms: float = 50.0, backend: str = "qemu", live: bool = False,
            job_file: Path | None = None, job_group: str | None = None,
            token: str | None = None, ca_cert: str | None = None,
            client_cert: str | None = None, client_key: str | None = None,
            tls_server_name: str | None = None, http_ports: tuple[int, ...] = (),
            rpc_ports: tuple[int, ...] = (), arrival: str = "sequential",
            max_in_flight: int = 16, duration_s: float | None = None,
            seed: int | None = None, lifetime_s: float = 0.0, keep: bool = False) -> None:
    """Run a campaign of RUNS instantiations and record it into runs/LABEL."""
    if keep and lifetime_s:
        raise VimprofError("--keep and --lifetime do not go together: keep deletes at the end")
    if memory_mb is None:
        memory_mb = 32 if backend == "xl" else 128
    if backend == "qemu" and memory_mb < 128:
        raise VimprofError("--memory-mb must be at least 128 for QEMU guests")
    if arrival != "sequential":  # a bad spec is one line before any lab comes up
        from vimprof.campaigns import arrivals

        arrivals.parse(arrival, seed=seed)
    if vim == "nova":
        from vimprof.campaigns import nova as campaign_nova

        if live:
            raise VimprofError("--live is for Nomad campaigns; beside a Nova campaign run "
                               f"`vimprof analyze {label} --follow` in another terminal")

        nrun, ntarget = campaign_nova.cli_capture(
            console, runs=runs, label=label, runs_dir=runs_dir, force=force,
            variant=nova_driver, accel=accel, os_cloud=os_cloud, image=image, flavor=flavor,
            capture_iface=capture_iface, poll_ms=poll_ms,
            timeout_s=max(timeout_s, 120.0), warmup_runs=warmup_runs, arrival=arrival,
            max_in_flight=max_in_flight, duration_s=duration_s, seed=seed,
            lifetime_s=lifetime_s, keep=keep)
        if not no_analyze and ntarget.capture_iface:
            _analyze(nrun)
        console.print(f"run directory: {nrun.path}")
        return
    from vimprof.campaigns import nomad as campaign

    spec, target = campaign.prepare(
        console, label=label, runs=runs, nomad_addr=nomad_addr, capture_iface=capture_iface,
        kernel=kernel, accel=accel, memory_mb=memory_mb, timeout_s=timeout_s, driver=driver,
        nomad_variant=nomad_variant, backend=backend, warmup_runs=warmup_runs, floor=floor,
        job_file=job_file, job_group=job_group, token=token, ca_cert=ca_cert,
        client_cert=client_cert, client_key=client_key, tls_server_name=tls_server_name,
        http_ports=http_ports, rpc_ports=rpc_ports, arrival=arrival,
        max_in_flight=max_in_flight, duration_s=duration_s, seed=seed, lifetime_s=lifetime_s,
        keep=keep)
    run = rundir.RunDir.create(label, runs_dir, force=force)
    sequential = arrival == "sequential"
    what = (f"job {target.job.source}" if target.job else
            f"{driver} driver, {target.accelerator}, {memory_mb} MB")
    console.print(f"campaign [bold]{label}[/]: {runs} run(s) against Nomad "
                  f"({target.nomad_variant}) at {target.nomad_addr} ({what})"
                  + ("" if sequential else f", arrivals {arrival}"))
    live_analysis = None
    if live and target.capture_iface:
        from vimprof.analyzer.follow import Follower, LiveAnalysis, describe

        live_analysis = LiveAnalysis(run, Follower(run, lambda tl: console.print(describe(tl)),
                                                   progress_s=1e9)).start()
    try:
        failures = campaign.run_campaign(spec, target, run, console)
    except VimprofError:
        if live_analysis is not None:
            live_analysis.abort()
        raise
    except KeyboardInterrupt:
        if live_analysis is not None:  # the campaign closed its capture: analyse what it has
            _report(run, live_analysis.finish())
        raise
    if failures:
        where = run.file(rundir.REQUESTS)
        console.print(f"[yellow]{failures} of {runs} run(s) failed; see {where}")
    if live_analysis is not None:
        _report(run, live_analysis.finish())
    elif not no_analyze and target.capture_iface:
        _analyze(run)
    console.print(f"run directory: {run.path}")


@cli.command("run")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an earlier sweep of the same name.")
@click.option("--dry-run", is_flag=True,
              help="Validate the file and print the plan (variants x levels, instances, an "
                   "estimate); bring nothing up.")
@runs_dir_option
def run_file(file: Path, force: bool, dry_run: bool, runs_dir: Path) -> None:
    """Run the campaign file FILE (docs/campaign-files.md): every variant and level, one run
    directory each under runs/NAME/, plus runs/NAME/sweep.json."""
    from vimprof.campaigns import file as campaign_file

    _sweep(campaign_file.load(file), force, dry_run, runs_dir)


@cli.command()
@click.option("--vim", type=click.Choice(["nomad", "nova"]), default="nomad", show_default=True)
@click.option("--label", "-l", required=True, help="The sweep's name (runs/LABEL/).")
@click.option("--variant", "variants", multiple=True, metavar="NAME:KEY=VALUE,...",
              help="A variant, e.g. tuned:driver=xen-tuned,nomad=tuned (Nomad keys: driver, "
                   "nomad, backend, memory_mb, floor; Nova: nova_driver). Repeatable; "
                   "default: one variant with the defaults.")
@click.option("--levels", metavar="SPEC,SPEC,...",
              help="Arrival specs to sweep, e.g. poisson:1,poisson:2,poisson:4.")
@click.option("--arrival", metavar="SPEC", help="One level (instead of --levels).")
@click.option("--runs", "-n", type=int, help="Instances per level [default: 10].")
@click.option("--duration", "duration_s", type=float, metavar="S",
              help="Open/closed loop: stop sending after S seconds.")
@click.option("--warmup", type=int, help="Warm-up runs per level.")
@click.option("--seed", type=int, help="Seed of Poisson arrivals.")
@click.option("--max-in-flight", type=int)
@click.option("--timeout", "timeout_s", type=float, help="Per-instance timeout in s.")
@click.option("--on-failure", type=click.Choice(["continue", "stop"]))
@click.option("--failure-threshold", type=float, metavar="FRACTION",
              help="Failed share of a level's runs above which on-failure applies [0.5].")
@click.option("--nomad-addr", metavar="URL", help="A Nomad cluster (default: the lab).")
@click.option("--kernel", metavar="PATH")
@click.option("--job", metavar="FILE")
@click.option("--job-group", metavar="NAME")
@click.option("--capture-iface", metavar="IFACE")
@click.option("--token-env", metavar="VAR", help="The ACL token's environment variable "
              "[NOMAD_TOKEN].")
@click.option("--os-cloud", metavar="NAME")
@click.option("--image", metavar="ID|NAME")
@click.option("--flavor", metavar="ID|NAME")
@click.option("--accel", type=click.Choice(["auto", "tcg", "kvm"]))
@click.option("--force", is_flag=True, help="Overwrite an earlier sweep of the same name.")
@click.option("--dry-run", is_flag=True, help="Print the plan; bring nothing up.")
@runs_dir_option
def sweep(vim: str, label: str, variants: tuple[str, ...], levels: str | None,
          arrival: str | None, force: bool, dry_run: bool, runs_dir: Path, **opts) -> None:
    """A sweep from flags: the same as `vimprof run FILE` with the file built from them."""
    from vimprof.campaigns import file as campaign_file

    target = {k: opts.pop(k) for k in ("nomad_addr", "kernel", "job", "job_group",
                                       "capture_iface", "token_env", "os_cloud", "image",
                                       "flavor", "accel")}
    cf = campaign_file.from_flags(vim=vim, label=label, variants=variants, levels=levels,
                                  arrival=arrival, target=target, **opts)
    _sweep(cf, force, dry_run, runs_dir)


def _sweep(cf, force: bool, dry_run: bool, runs_dir: Path) -> None:
    from vimprof.campaigns import file as campaign_file
    from vimprof.campaigns import sweep as sweeper

    if dry_run:
        for line in campaign_file.describe_plan(cf):
            console.print(line)
        console.print(f"dry run: nothing brought up; would write {runs_dir / cf.name}/")
        return
    result = sweeper.run_sweep(cf, console, runs_dir, force=force)
    sweeper.report_hook(result, console)
    if not result.ok:
        sys.exit(1)


@cli.command()
@click.argument("run")
@click.option("--capture", "captures", multiple=True, metavar="FILE[@OFFSET_MS]",
              help="Another capture to merge by time (e.g. from the client host); @OFFSET_MS is "
                   "added to its timestamps (its clock's lag). Repeatable.")
@click.option("--hooks-offset-ms", type=float, default=0.0, show_default=True,
              help="Added to hooks.jsonl times (the client host's clock lag).")
@click.option("--tolerance-ms", type=float, default=50.0, show_default=True,
              help="Cross-check tolerance between wire phases and the VIM's own timing.")
@click.option("--http-port", "http_ports", type=int, multiple=True, metavar="PORT",
              help="Also decode this TCP port as the VIM's HTTP API (besides 4646, Nova's "
                   "...; default: the ports the campaign recorded). Repeatable.")
@click.option("--rpc-port", "rpc_ports", type=int, multiple=True, metavar="PORT",
              help="Also decode this TCP port as Nomad RPC (besides 4647). Repeatable.")
@click.option("--follow", "-f", is_flag=True,
              help="Live: analyse the capture while `vimprof capture` still writes it, print "
                   "each instance as it finishes, write timelines.jsonl when the campaign ends "
                   "(or on Ctrl-C).")
@runs_dir_option
def analyze(run: str, captures: tuple[str, ...], hooks_offset_ms: float, tolerance_ms: float,
            runs_dir: Path, follow: bool = False, http_ports: tuple[int, ...] = (),
            rpc_ports: tuple[int, ...] = ()) -> None:
    """Rebuild per-instance phase timelines of RUN (a directory or a label) from its capture."""
    from vimprof.analyzer.decoders.ports import Ports
    from vimprof.analyzer.sources.merge import parse_capture_arg

    extra = [parse_capture_arg(c) for c in captures]
    if follow:
        from vimprof.analyzer.follow import WAIT_S, wait_for_run

        try:
            rd = rundir.RunDir.resolve(run, runs_dir)
        except VimprofError:
            console.print(f"waiting up to {WAIT_S:.0f} s for a campaign to create {run} ...")
            rd = wait_for_run(run, runs_dir)
        _analyze(rd, extra, hooks_offset_ms, tolerance_ms, follow=True,
                 ports=Ports.of_run(rd, http_ports, rpc_ports))
        return
    rd = rundir.RunDir.resolve(run, runs_dir)
    _analyze(rd, extra, hooks_offset_ms, tolerance_ms,
             ports=Ports.of_run(rd, http_ports, rpc_ports))


def _analyze(run: rundir.RunDir, extra: list | None = None, hooks_offset_ms: float = 0.0,
             tolerance_ms: float = 50.0, follow: bool = False, ports=None) -> None:
    from vimprof.analyzer import analyze_run

    kw = dict(hooks_offset_ns=int(hooks_offset_ms * 1e6), tolerance_ms=tolerance_ms, ports=ports)
    if follow:
        from vimprof.analyzer.follow import Follower, analyze_run_follow, describe

        follower = Follower(run, lambda tl: console.print(describe(tl)),
                            lambda line: console.print(f"[dim]{line}[/]"))
        console.print(f"following {run.file(rundir.CAPTURE)} until the campaign ends "
                      "(Ctrl-C: stop and write what was read)")
        result = analyze_run_follow(run, follower, extra or [], **kw)
    else:
        result = analyze_run(run, extra or [], **kw)
    _report(run, result)


def _report(run: rundir.RunDir, result) -> None:
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"analyzed {run.file(rundir.CAPTURE)}: {result.summary()}")


@cli.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", type=click.Path(path_type=Path),
              help="Report directory (default: reports/A-vs-B).")
@click.option("--alpha", type=float, default=0.05, show_default=True,
              help="Significance level of the Mann-Whitney U test behind each verdict.")
@click.option("--min-effect", "min_effect_pct", type=float, default=5.0, show_default=True,
              metavar="PCT", help="Smallest change of a median (%) that earns a faster/slower "
                                  "verdict; smaller significant changes print '~'.")
@click.option("--min-effect-ms", type=float, default=1.0, show_default=True, metavar="MS",
              help="Smallest absolute change of a median (ms) that earns a verdict: "
                   "microsecond moves of sub-millisecond phases print '~'.")
@click.option("--fail-if-slower", "gates", multiple=True, metavar="PHASE:PCT",
              help="Exit with status 1 if PHASE is significantly slower than the baseline by "
                   "more than PCT% (repeatable), e.g. --fail-if-slower total:10.")
@runs_dir_option
def compare(runs: tuple[str, ...], out: Path | None, alpha: float, min_effect_pct: float,
            gates: tuple[str, ...], runs_dir: Path, min_effect_ms: float = 1.0) -> None:
    """Compare phases of two or more runs; the first is the baseline.

    Prints the verdict tables and writes report.md, report.html, summary.json, phases.csv,
    trace.json (Perfetto) and the charts (PNG) into the report directory.
    """
    from vimprof.report import Gate, write_report

    if len(runs) < 2:
        raise VimprofError("compare needs at least two runs, e.g. `vimprof compare stock tuned`")
    parsed = [Gate.parse(g) for g in gates]
    dirs = [rundir.RunDir.resolve(r, runs_dir) for r in runs]
    out = out or Path("reports") / "-vs-".join(d.label for d in dirs)
    out.mkdir(parents=True, exist_ok=True)
    # the tables are laid out for 100 columns; a pipe or file gets 100, not rich's 80
    tables = console if console.is_terminal else Console(width=100, highlight=False)
    cmp = write_report(dirs, out, tables, alpha=alpha, min_effect=min_effect_pct / 100.0,
                       gates=parsed, min_effect_ms=min_effect_ms)
    console.print(f"report: {out / 'report.html'} (and report.md, summary.json, phases.csv, "
                  "trace.json)")
    if cmp.gate_messages:
        for msg in cmp.gate_messages:
            err_console.print(f"[red]vimprof: gate failed:[/] {msg}", soft_wrap=True)
        sys.exit(1)


@cli.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", type=click.Path(path_type=Path),
              help="Chart directory (default: reports/A-vs-B, or reports/A for one run).")
@runs_dir_option
def plot(runs: tuple[str, ...], out: Path | None, runs_dir: Path) -> None:
    """Draw the charts (PNG) of one or more runs from their timelines; the first is the
    baseline. No statistics tables: see `vimprof compare`."""
    from vimprof.report import write_plots

    dirs = [rundir.RunDir.resolve(r, runs_dir) for r in runs]
    out = out or Path("reports") / "-vs-".join(d.label for d in dirs)
    for name in write_plots(dirs, out).values():
        console.print(f"chart: {out / name}")


@cli.command()
@click.argument("runs", nargs=-1)
@click.option("--variant", "variants", multiple=True, metavar="NAME=RUN,RUN",
              help="A variant and the run directories of its load levels (repeatable); "
                   "without it, RUNS are grouped by their manifest's VIM and driver variant.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Report directory (default: reports/curves-A-B).")
@runs_dir_option
def curves(runs: tuple[str, ...], variants: tuple[str, ...], out: Path | None,
           runs_dir: Path) -> None:
    """Load curves of open-loop campaigns at several arrival rates: phase median and p95,
    throughput with the knee, generator lag, validity flags; stock and tuned side by side.

    RUNS: run directories (or labels), or one sweep directory holding sweep.json. Writes
    load.md, load.json and the charts (PNG) into the report directory.
    """
    from vimprof.report.load import (
        SWEEP_JSON,
        group_by_manifest,
        load_levels,
        read_sweep,
        write_load_report,
    )

    levels = None
    groups: dict[str, list[rundir.RunDir]] = {}
    if len(runs) == 1 and not variants and (Path(runs[0]) / SWEEP_JSON).is_file():
        groups, levels = read_sweep(Path(runs[0]))
    else:
        for spec in variants:
            name, sep, refs = spec.partition("=")
            if not sep or not name or not refs.strip(","):
                raise VimprofError(f"--variant {spec!r}: expected NAME=RUN,RUN, "
                                   "e.g. --variant stock=poisson-1,poisson-4")
            if name in groups:
                raise VimprofError(f"--variant {name!r} given twice")
            groups[name] = [rundir.RunDir.resolve(r, runs_dir) for r in refs.split(",") if r]
        for name, rds in group_by_manifest(
                [rundir.RunDir.resolve(r, runs_dir) for r in runs]).items():
            if name in groups:
                raise VimprofError(f"variant {name!r} both from --variant and from RUNS")
            groups[name] = rds
    if not groups:
        raise VimprofError("curves needs run directories: RUN... or --variant NAME=RUN,RUN")
    report = load_levels(groups, levels=levels)
    out = out or Path("reports") / ("curves-" + "-".join(
        rd.label for rds in groups.values() for rd in rds))
    tables = console if console.is_terminal else Console(width=160, highlight=False)
    write_load_report(report, out, tables)
    console.print(f"load report: {out / 'load.md'} (and load.json, load-*.png)")


@cli.command()
@click.argument("runs", nargs=-1, required=True)
@runs_dir_option
def validate(runs: tuple[str, ...], runs_dir: Path) -> None:
    """Check the files of run directories RUNS (paths or labels; or a report's summary.json)
    against vimprof's JSON Schemas (vimprof/schemas, docs/run-directory.md).

    Prints each problem as FILE:LINE: message (at /json/pointer) and one summary line per
    run; exits 1 if any file is invalid. A torn last line (a campaign killed mid-write) is a
    warning; a run directory of a newer schema version than this vimprof reads is an error.
    """
    from vimprof import schema

    lines, ok = schema.validate_refs(runs, runs_dir)
    for line in lines:
        click.echo(line)
    if not ok:
        sys.exit(1)


@cli.group()
def lab() -> None:
    """Bring up, inspect or tear down a real VIM on this machine."""


@lab.command("up")
@click.argument("vim", type=click.Choice(["nomad", "nova", "xen"]))
@click.option("--accel", type=click.Choice(["auto", "tcg", "kvm"]), default="auto",
              show_default=True, help="Default QEMU accelerator of the lab (auto: measured).")
@click.option("--nomad", "nomad_variant", type=click.Choice(["stock", "tuned"]), default="stock",
              show_default=True, help="Nomad as released, or the reactive build.")
@click.option("--driver", "driver_variant", type=click.Choice(["stock", "tuned"]),
              default="stock", show_default=True,
              help="Variant of the micro-VNF driver plugin (xen) the client loads.")
@click.option("--nova-driver", type=click.Choice(["vimprof", "libvirt", "patched"]),
              default="vimprof", show_default=True,
              help="nova: driver kit of nova-compute: vimprof's diskless LibvirtDriver subclass "
              "(stock images boot as in Nova), Nova's own LibvirtDriver, or Nova patched in "
              "tree with patches/nova. Switching kits restarts only nova-compute.")
@click.option("--hypervisor", type=click.Choice(["qemu", "xen"]), default="qemu",
              show_default=True, help="nomad: xen adds the Xen lab and a Nomad client in its "
              "dom0 with the driver plugin's xl backend (Nomad on Xen).")
def lab_up(vim: str, accel: str, nomad_variant: str, driver_variant: str,
           nova_driver: str, hypervisor: str = "qemu") -> None:
    """Start a Nomad server (netns hostc) and client (netns hostl) joined by a veth pair, or
    (nova) a single-node OpenStack in netns hostn, or (xen) Xen with a PV dom0 in QEMU (netns
    hostx; the options do not apply to it)."""
    if vim == "xen":
        from vimprof.lab import xen as xen_lab

        xs = xen_lab.up()
        console.print(f"Xen lab up in {xs.boot_s:.1f} s: dom0 {xs.dom0_ip} (netns {xs.netns}), "
                      f"xenstored {xs.xenstored_socket}, commands {xs.command_socket}; "
                      f"state in {xs.lab_dir}")
        return
    if vim == "nova":
        from vimprof.lab import nova as nova_lab

        st = nova_lab.up(accelerator=accel, compute_driver=nova_driver)
        console.print(f"Nova lab up: nova {st.nova_version}, Keystone {st.auth_url}, "
                      f"libvirt virt_type {st.virt_type}, driver {st.compute_driver}; "
                      f"state in {st.lab_dir}")
        return
    from vimprof.lab import nomad as nomad_lab

    if hypervisor == "xen":
        from vimprof.lab import nomad_xen

        nx = nomad_xen.up(nomad_variant=nomad_variant, driver_variant=driver_variant,
                          accelerator=accel)
        console.print(f"Nomad on Xen up: server API {nx.http_addr} (Nomad {nx.nomad_variant}), "
                      f"client {nomad_xen.NODE_NAME} in dom0 with the xen driver "
                      f"{nx.driver_variant} (xl backend), hooks {nx.hooks_file}; "
                      "down: `vimprof lab down xen` and `vimprof lab down nomad`")
        return
    state = nomad_lab.up(accelerator=accel, nomad_variant=nomad_variant,
                         driver_variant=driver_variant)
    plugin = (f"xen driver {state.driver_variant}" if state.driver_variant
              else "no xen driver (run scripts/setup)")
    console.print(f"Nomad lab up: {state.nomad_version} ({state.nomad_variant}), "
                  f"API {state.http_addr}, guests on QEMU/{state.accelerator}, {plugin}; "
                  f"state in {state.lab_dir}")


@lab.command("down")
@click.argument("vim", type=click.Choice(["nomad", "nova", "xen"]))
def lab_down(vim: str) -> None:
    """Stop the lab: agents, guests, namespaces. Leaves nothing behind."""
    from vimprof.lab import nomad as nomad_lab
    from vimprof.lab import nova as nova_lab
    from vimprof.lab import xen as xen_lab

    labs = {"nova": nova_lab, "xen": xen_lab, "nomad": nomad_lab}
    for line in labs[vim].down() or ["nothing was running"]:
        console.print(line)


@lab.command("status")
@click.argument("vim", type=click.Choice(["nomad", "nova", "xen"]))
def lab_status(vim: str) -> None:
    """Show whether the lab runs, its leader, node and guests."""
    from vimprof.lab import nomad as nomad_lab
    from vimprof.lab import nova as nova_lab
    from vimprof.lab import xen as xen_lab

    labs = {"nova": nova_lab, "xen": xen_lab, "nomad": nomad_lab}
    for key, value in labs[vim].status().items():
        console.print(f"{key:>15}: {value}")


@cli.command()
@click.option("--vim", type=click.Choice(["nomad", "nova"]), default=None,
              help="Which VIM to clean [default: every embedded lab that runs].")
@click.option("--nomad-addr", metavar="URL", help="A Nomad cluster (default: the embedded lab).")
@click.option("--os-cloud", metavar="NAME",
              help="nova: a cloud from clouds.yaml (default: the embedded lab).")
@click.option("--token", metavar="TOKEN",
              help="With --nomad-addr: ACL token [env NOMAD_TOKEN; TLS from NOMAD_CACERT ...].")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
def clean(vim: str | None, nomad_addr: str | None, os_cloud: str | None, dry_run: bool,
          token: str | None = None) -> None:
    """Delete what earlier campaigns left on a target: Nomad jobs and Nova servers carrying
    vimprof's tag (after a vimprof killed with SIGKILL, or a host that rebooted mid-campaign).
    Nothing without the tag is touched. Exits 1 if something could not be deleted."""
    from vimprof.campaigns import clean as cleaner

    vims = [vim] if vim else (["nomad"] if nomad_addr else ["nova"] if os_cloud else [])
    if not vims:  # every lab that runs
        from vimprof.lab import nomad as nomad_lab
        from vimprof.lab import nova as nova_lab

        vims = [v for v, lab_mod in (("nomad", nomad_lab), ("nova", nova_lab))
                if lab_mod.current() is not None]
        if not vims:
            raise VimprofError("no lab runs: pass --nomad-addr URL or --os-cloud NAME")
    results = []
    for v in vims:
        if v == "nomad":
            results.append(cleaner.clean_nomad(cleaner.nomad_access(nomad_addr, token), dry_run,
                                               console))
        else:
            cloud, what = cleaner.nova_cloud(os_cloud)
            results.append(cleaner.clean_nova(cloud, dry_run, console, what))
    for r in results:
        if r.deleted:
            console.print(f"{r.target}: deleted {r.deleted}")
        if r.remaining:
            err_console.print(f"[red]vimprof: {r.target}: still there after clean-up:[/] "
                              + ", ".join(r.remaining))
    if any(r.remaining for r in results):
        sys.exit(1)


def _add_rally() -> None:  # `vimprof rally task|run|import` (vimprof/rally/cli.py)
    from vimprof.rally.cli import rally

    cli.add_command(rally)


_add_rally()


def main() -> None:
    interrupts.install()  # SIGTERM and SIGHUP stop a command the way Ctrl-C does
    try:
        cli.main(standalone_mode=False)
    except VimprofError as exc:
        err_console.print(f"[red]vimprof: error:[/] {exc}", soft_wrap=True)
        sys.exit(2)
    except click.exceptions.Abort:
        err_console.print("vimprof: interrupted")
        sys.exit(interrupts.exit_status())
    except KeyboardInterrupt:
        sys.exit(interrupts.exit_status())
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    if interrupts.received():  # e.g. analyze --follow wound down on a signal: say so
        sys.exit(interrupts.exit_status())


if __name__ == "__main__":
    main()
