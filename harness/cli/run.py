"""`shapeprop-bench run`: run a suite inline, in local processes or on Slurm."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from typing import Any

import click

from harness.cli.inspect import plan_table, shared_note
from harness.cli.options import SuiteArgs, escape, suite_options
from harness.cli.options import console as make_console


@click.command()
@suite_options
@click.option(
    "--executor", type=click.Choice(["inline", "local", "slurm"]), default="inline", show_default=True
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Runs at once (local, slurm). On a CPU each local worker gets cores / workers threads: run "
    "several runs in one call with more workers, not several calls at once (two 1-worker calls on "
    "2 cores each take both cores and slowed each other ~40x).",
)
@click.option("--dry-run", is_flag=True, help="Show what would run, run nothing.")
@click.option(
    "--verbose",
    is_flag=True,
    help="Also show the libraries' messages and warnings on the console (each run's run.log has them anyway).",
)
@click.option(
    "--no-preflight",
    "skip_preflight",
    is_flag=True,
    help="Start the runs without first checking their data, weights and output folders (e.g. data "
    "that only the compute nodes see).",
)
@click.option("--force", is_flag=True, help="Run again even runs that FINISHED (from scratch).")
@click.option(
    "--log-checkpoint", is_flag=True, help="Upload each run's final checkpoint as an MLflow artifact."
)
@click.option(
    "--register-model",
    metavar="NAME",
    help="Register each finished run's model (the MLflow Model runs:/<run id>/model) as a new version "
    "of the registered model NAME in the MLflow Model Registry.",
)
@click.option(
    "--log-every",
    type=click.IntRange(min=1),
    help="Training steps per logged metrics window (losses, lr). Default: the library's (20).",
)
@click.option(
    "--until-decided",
    is_flag=True,
    help="Then add seeds, in rounds of --seeds-per-round, to the rows of the suite's claims that "
    "are still undecided, up to --max-seeds, stopping each claim once decided. A group-sequential "
    "design with alpha spending keeps looking after every round from inflating the error rate; "
    "`report --claims` judges the claims under the same design.",
)
@click.option(
    "--max-seeds",
    type=click.IntRange(min=2),
    default=10,
    show_default=True,
    help="With --until-decided: the most seeds a row gets.",
)
@click.option(
    "--seeds-per-round",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="With --until-decided: seeds added per round (each round is a look at the claims).",
)
@click.option("--slurm-partition", help="Slurm partition.")
@click.option(
    "--slurm-timeout-min", type=int, default=24 * 60, show_default=True, help="Time limit per task."
)
@click.option(
    "--slurm-gpus",
    type=click.IntRange(min=0),
    help="GPUs per node of the partition, at most. Each run asks for its own schedule.num_nodes nodes "
    "x schedule.devices GPUs (one task per GPU); a run needing more GPUs per node than this fails "
    "before submission. 0: a partition without GPUs (devices are then CPU tasks). Default: no limit.",
)
@click.option("--slurm-cpus", type=int, default=8, show_default=True, help="CPUs per task (per GPU).")
@click.option("--slurm-mem-gb", type=int, help="Memory per node.")
@click.option("--slurm-param", multiple=True, metavar="KEY=VALUE", help="Extra sbatch parameter. Repeatable.")
@click.option(
    "--slurm-cluster",
    type=click.Choice(["slurm", "local", "debug"]),
    default="slurm",
    show_default=True,
    help="'local' runs the array job's tasks as local processes through submitit (tests, laptops).",
)
def run(
    args: SuiteArgs,
    executor: str,
    workers: int,
    dry_run: bool,
    verbose: bool,
    skip_preflight: bool,
    force: bool,
    log_checkpoint: bool,
    register_model: str | None,
    log_every: int | None,
    until_decided: bool,
    max_seeds: int,
    seeds_per_round: int,
    slurm_partition: str | None,
    slurm_timeout_min: int,
    slurm_gpus: int,
    slurm_cpus: int,
    slurm_mem_gb: int | None,
    slurm_param: tuple[str, ...],
    slurm_cluster: str,
) -> None:
    """Run a suite: every run whose key has not FINISHED in MLflow (all with --force).

    A failing run is recorded FAILED (traceback attached) and the suite goes on; the command
    exits non-zero if any run failed. A run killed earlier resumes from its last checkpoint.
    """
    console = make_console()
    loaded, profile, uri = args.suite, args.profile, args.tracking_uri
    planned = args.plan(force)
    todo = [p for p in planned if p.action != "skip"]
    console.print(
        f"suite [bold]{escape(loaded.name)}[/] ({loaded.reproduces or 'no paper target'}), profile {escape(profile)}: "
        f"{len(planned)} runs, {len(todo)} to run{shared_note(planned)}, {len(planned) - len(todo)} already finished; "
        f"tracking {uri}"
    )
    if not planned:
        raise click.ClickException(f"no run of suite '{loaded.name}' matches --only {' '.join(args.only)}")
    if dry_run:
        console.print(plan_table(planned, "plan (dry run)"))
        return
    slurm = None
    if executor == "slurm":
        slurm = _slurm_parameters(
            slurm_cluster,
            slurm_partition,
            slurm_timeout_min,
            slurm_gpus,
            slurm_cpus,
            slurm_mem_gb,
            slurm_param,
        )
    design = _sequential_design(loaded, profile, uri, max_seeds, seeds_per_round) if until_decided else None
    from harness.preflight import PreflightError
    from harness.runner import RunOptions

    options = RunOptions(
        profile=profile,
        tracking_uri=uri,
        runs_root=args.runs_dir,
        overrides=args.overrides,
        force=force,
        executor=executor,
        workers=workers,
        slurm=slurm,
        check=not skip_preflight,
        log_checkpoint=log_checkpoint,
        register_model=register_model,
        log_every=log_every,
    )

    def run_rows(suite: Any, only: tuple[str, ...], planned: list[Any] | None = None) -> Any:
        rows = dataclasses.replace(options, only=only)
        try:
            summary = _run_with_progress(
                console, suite, rows, rows.plan(suite) if planned is None else planned, verbose
            )
        except PreflightError as err:
            raise click.ClickException(str(err)) from None
        console.print(
            f"done {len(summary.done)}, skipped {len(summary.skipped)}, failed {len(summary.failed)}"
            + (f"  (MLflow invocation run {summary.parent_run_id})" if summary.parent_run_id else "")
        )
        for outcome in summary.failed:
            console.print(
                f"  [red]FAILED[/] {escape(outcome.row)} {escape(f'[{outcome.key}]')}: {escape(outcome.error)}"
            )
        return summary

    failed = bool(run_rows(loaded, args.only, planned).failed)
    if design is not None and not failed:
        failed = _until_decided(console, loaded, profile, uri, design, args.overrides, run_rows)
    if failed:
        sys.exit(1)


def _sequential_design(suite: Any, profile: str, uri: str, max_seeds: int, step: int) -> Any:
    """The design of `--until-decided`: the one the store holds for this suite and profile, which
    the options must not contradict, or a new one from them."""
    from mlflow import MlflowClient

    from harness.report.inference import Sequential
    from harness.suite import profile_seeds
    from harness.until_decided import read_design

    if not suite.claims:
        raise click.UsageError(f"--until-decided: suite '{suite.name}' declares no claims")
    first = len(profile_seeds(suite, profile))
    if max_seeds <= first:
        raise click.BadParameter(
            f"{max_seeds}: the profile '{profile}' already runs {first} seeds; give more",
            param_hint="--max-seeds",
        )
    design = Sequential(first=first, step=step, max_seeds=max_seeds)
    stored = read_design(MlflowClient(tracking_uri=uri), suite.name, profile)
    if stored is not None and (stored.first, stored.step, stored.max_seeds) != (first, step, max_seeds):
        raise click.UsageError(
            f"--until-decided: suite '{suite.name}' (profile {profile}) was run until decided with "
            f"{stored.first} seeds first, --seeds-per-round {stored.step}, --max-seeds {stored.max_seeds}; "
            "a sequential design cannot change once looked at: run again with those"
        )
    return stored or design


def _until_decided(
    console: Any, suite: Any, profile: str, uri: str, design: Any, overrides: Any, run_rows
) -> bool:
    """The rounds of --until-decided; True if a round had failed runs."""
    from mlflow import MlflowClient

    from harness.report.build import judged_claims
    from harness.until_decided import exact, until_decided, write_design

    client, failed = MlflowClient(tracking_uri=uri), False
    console.print(
        f"until decided: looks at {', '.join(map(str, design.looks()))} seeds "
        f"(alpha spending, {design.alpha:g} in all)"
    )

    def judge(current: Any) -> Any:
        return judged_claims(client, [suite], profile, overrides, design=lambda s: current)[0]

    def run_round(extended: Any, rows: list[str]) -> None:
        nonlocal failed
        failed |= bool(run_rows(extended, tuple(exact(row) for row in rows)).failed)

    until_decided(
        suite,
        profile,
        design,
        judge,
        run_round,
        save=lambda current: write_design(client, suite.name, profile, current),
        echo=lambda text: console.print(escape(text)),
    )
    return failed


def _slurm_parameters(
    cluster: str,
    partition: str | None,
    timeout_min: int,
    gpus: int | None,
    cpus: int,
    mem_gb: int | None,
    extra: tuple[str, ...],
) -> dict[str, Any]:
    """The `harness.executors.SlurmExecutor` parameters of the --slurm-* options. Nodes, tasks and
    GPUs per node are not among them: each run's schedule.num_nodes and schedule.devices decide."""
    import shutil

    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise click.ClickException(
            "--executor slurm: sbatch is not on PATH (no Slurm here); try --executor local"
        )
    params: dict[str, Any] = {"cluster": cluster, "timeout_min": timeout_min, "cpus_per_task": cpus}
    if cluster == "slurm":
        params["max_gpus_per_node"] = gpus
        params["slurm_signal_delay_s"] = 120  # time to flush metrics before the preemption kill
    if partition:
        params["slurm_partition"] = partition
    if mem_gb:
        params["mem_gb"] = mem_gb
    additional = {}
    for pair in extra:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--slurm-param")
        additional[key] = value
    if additional:
        params["slurm_additional_parameters"] = additional
    return params


def _run_with_progress(console: Any, suite: Any, options: Any, planned: list[Any], verbose: bool) -> Any:
    """Run the planned runs under one bar for the suite and one for each run in progress (inline,
    local), with a line per run as it ends; with `verbose`, Lightning's own bar and every library
    message too."""
    from harness.console import SuiteProgress, quiet_console
    from harness.runner import run_suite

    def line(outcome: Any, i: int, n: int) -> str:
        mark = "[green]done[/]" if outcome.ok else f"[red]{outcome.status.lower()}[/]"
        note = f" ({outcome.error})" if outcome.error else ""
        return (
            f"{escape(f'[{i}/{n}]')} {mark} {escape(outcome.row)} {escape(f'[{outcome.key}]')} "
            f"in {outcome.seconds:.0f} s{escape(note)}"
        )

    executor, workers = options.executor, options.workers
    if verbose and executor == "inline":  # Lightning draws each run's bar
        printed = dataclasses.replace(options, on_outcome=lambda o, i, n: console.print(line(o, i, n)))
        return run_suite(suite, printed, planned)
    title = escape(suite.name if executor == "inline" else f"{suite.name} ({executor}, {workers} workers)")
    with contextlib.ExitStack() as stack:
        if not verbose:
            stack.enter_context(quiet_console())
        display = stack.enter_context(SuiteProgress(console, f"[bold]{title}[/]", total_runs=0))

        def start(planned: Any) -> None:
            display.start(total_runs=sum(p.action != "skip" for p in planned))

        shown = dataclasses.replace(
            options,
            display=display,
            on_outcome=lambda o, i, n: display.run_ended(o.key, line(o, i, n)),
            on_start=start,
        )
        return run_suite(suite, shown, planned)
