"""The `shapeprop-bench` command line."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from typing import Any

import click

from shapeprop import __version__

# Commands that live in other modules, imported only when used (the CLI must start fast).
LAZY_COMMANDS = {
    "data": ("harness.data_cli", "data"),
    "report": ("harness.report.cli", "report"),
    "show": ("harness.show", "show"),
}


class _Group(click.Group):
    """A click group that also offers the lazily imported commands of `LAZY_COMMANDS`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = [n for n, (module, _) in LAZY_COMMANDS.items() if importlib.util.find_spec(module) is not None]
        return sorted(set(super().list_commands(ctx)) | set(lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            module, attr = LAZY_COMMANDS[cmd_name]
            if importlib.util.find_spec(module) is not None:
                command = getattr(importlib.import_module(module), attr)
        return command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shapeprop-bench")
def main() -> None:
    """Reproduce and extend the ShapeProp paper's experiments.

    Suites (YAML) expand into runs that train and evaluate detectors with and without
    ShapeProp; every run is logged to MLflow, and reports render the paper's tables.
    """


@main.command()
def env() -> None:
    """Print versions of python, torch, CUDA, mlflow, detectron2 and the compiled operator."""
    from harness.environment import collect

    info = collect()
    width = max(map(len, info))
    for key, value in info.items():
        click.echo(f"{key:<{width}}  {value}")


# --------------------------------------------------------------------------- shared options


# `--set KEY=VALUE`, as detectron2's `opts` / MMDetection's `--cfg-options`: applied to every run
# after the suite and its profile; the value is read as YAML. On report and show it selects runs.
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="A config key's value (e.g. --set model.framework=detectron2; read as YAML): run, plan and "
    "status apply it to every run after the suite and profile; report and show pick the runs that "
    "have it. Repeatable.",
)


def parse_set(overrides: tuple[str, ...]) -> dict[str, Any]:
    """The `--set` items as {dotted key: value}; a click error names every bad one."""
    from harness.suite import SuiteError, parse_overrides

    try:
        return parse_overrides(overrides)
    except SuiteError as err:
        raise click.ClickException(str(err)) from None


def _suite_argument(f: Any) -> Any:
    return click.argument("suite")(f)


def _common_options(f: Any) -> Any:
    options = [
        click.option(
            "--profile", default="full", show_default=True, help="Suite profile: full (the paper) or mini."
        ),
        click.option(
            "--only",
            multiple=True,
            metavar="FILTER",
            help="Only runs whose row label, method or key contains FILTER (or matches it as a glob). Repeatable.",
        ),
        click.option(
            "--tracking-uri",
            help="MLflow store. Default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here.",
        ),
        click.option(
            "--runs-dir",
            default="runs",
            show_default=True,
            type=click.Path(file_okay=False),
            help="Root of the per-run work directories (checkpoints, logs).",
        ),
        set_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _load(suite_arg: str) -> Any:
    from harness.suite import SuiteError, load_suite, resolve_suite_path

    try:
        return load_suite(resolve_suite_path(suite_arg))
    except SuiteError as err:
        raise click.ClickException(str(err)) from None


def _plan(
    suite: Any,
    profile: str,
    tracking_uri: str | None,
    only: tuple[str, ...],
    force: bool,
    runs_dir: str,
    overrides: dict[str, Any],
) -> Any:
    from harness.runner import plan
    from harness.suite import SuiteError

    try:
        return plan(suite, profile, tracking_uri, only, force, runs_dir, overrides)
    except SuiteError as err:
        raise click.ClickException(str(err)) from None


def _console() -> Any:
    from rich.console import Console

    # Wide enough for the plan table when the output is a file or a pipe (rich assumes 80 columns).
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def _e(text: Any) -> str:
    """`text` with rich markup escaped (row labels, keys and errors are user text)."""
    from rich.markup import escape

    return escape(str(text))


def _axes_text(spec: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.axes.items() if k not in ("seed", "method"))


def _plan_table(planned: list[Any], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in (
        "#",
        "action",
        "state",
        "row",
        "method",
        "seed",
        "axes",
        "dataset",
        "backbone",
        "steps",
        "key",
    ):
        table.add_column(column, no_wrap=column in ("key", "action", "state"))
    style = {"skip": "dim", "resume": "yellow", "run": "green"}
    for i, p in enumerate(planned, start=1):
        cfg = p.spec.config
        table.add_row(
            str(i),
            p.action,
            p.state,
            _e(p.spec.row),
            p.spec.method,
            str(p.spec.seed),
            _e(_axes_text(p.spec)),
            cfg.data.dataset,
            cfg.model.backbone,
            str(cfg.schedule.max_steps),
            p.spec.key,
            style=style.get(p.action),
        )
    return table


# --------------------------------------------------------------------------- run / plan / status / ui


@main.command()
@_suite_argument
@_common_options
@click.option(
    "--executor", type=click.Choice(["inline", "local", "slurm"]), default="inline", show_default=True
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Runs at once (local, slurm)."
)
@click.option("--dry-run", is_flag=True, help="Show what would run, run nothing.")
@click.option("--force", is_flag=True, help="Run again even runs that FINISHED (from scratch).")
@click.option(
    "--log-checkpoint", is_flag=True, help="Upload each run's final checkpoint as an MLflow artifact."
)
@click.option(
    "--log-every",
    type=click.IntRange(min=1),
    help="Training steps per logged metrics window (losses, lr). Default: the library's (20).",
)
@click.option("--slurm-partition", help="Slurm partition.")
@click.option(
    "--slurm-timeout-min", type=int, default=24 * 60, show_default=True, help="Time limit per task."
)
@click.option("--slurm-gpus", type=int, default=1, show_default=True, help="GPUs per task.")
@click.option("--slurm-cpus", type=int, default=8, show_default=True, help="CPUs per task.")
@click.option("--slurm-mem-gb", type=int, help="Memory per task.")
@click.option("--slurm-param", multiple=True, metavar="KEY=VALUE", help="Extra sbatch parameter. Repeatable.")
@click.option(
    "--slurm-cluster",
    type=click.Choice(["slurm", "local", "debug"]),
    default="slurm",
    show_default=True,
    help="'local' runs the array job's tasks as local processes through submitit (tests, laptops).",
)
def run(
    suite: str,
    profile: str,
    only: tuple[str, ...],
    tracking_uri: str | None,
    runs_dir: str,
    overrides: tuple[str, ...],
    executor: str,
    workers: int,
    dry_run: bool,
    force: bool,
    log_checkpoint: bool,
    log_every: int | None,
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
    from harness import tracking

    console = _console()
    loaded = _load(suite)
    sets = parse_set(overrides)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    planned = _plan(loaded, profile, uri, only, force, runs_dir, sets)
    todo = [p for p in planned if p.action != "skip"]
    console.print(
        f"suite [bold]{_e(loaded.name)}[/] ({loaded.reproduces or 'no paper target'}), profile {_e(profile)}: "
        f"{len(planned)} runs, {len(todo)} to run, {len(planned) - len(todo)} already finished; "
        f"tracking {uri}"
    )
    if not planned:
        raise click.ClickException(f"no run of suite '{loaded.name}' matches --only {' '.join(only)}")
    if dry_run:
        console.print(_plan_table(planned, "plan (dry run)"))
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
    summary = _run_with_progress(
        console,
        loaded,
        profile,
        only,
        slurm,
        tracking_uri=uri,
        runs_root=runs_dir,
        executor=executor,
        workers=workers,
        force=force,
        log_checkpoint=log_checkpoint,
        log_every=log_every,
        overrides=sets,
    )
    console.print(
        f"done {len(summary.done)}, skipped {len(summary.skipped)}, failed {len(summary.failed)}"
        + (f"  (MLflow invocation run {summary.parent_run_id})" if summary.parent_run_id else "")
    )
    if summary.failed:
        for outcome in summary.failed:
            console.print(f"  [red]FAILED[/] {_e(outcome.row)} {_e(f'[{outcome.key}]')}: {_e(outcome.error)}")
        sys.exit(1)


def _slurm_parameters(
    cluster: str,
    partition: str | None,
    timeout_min: int,
    gpus: int,
    cpus: int,
    mem_gb: int | None,
    extra: tuple[str, ...],
) -> dict[str, Any]:
    import shutil

    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise click.ClickException(
            "--executor slurm: sbatch is not on PATH (no Slurm here); try --executor local"
        )
    params: dict[str, Any] = {"cluster": cluster, "timeout_min": timeout_min, "cpus_per_task": cpus}
    if cluster == "slurm":
        params["gpus_per_node"] = gpus
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


def _run_with_progress(
    console: Any, suite: Any, profile: str, only: tuple[str, ...], slurm: dict[str, Any] | None, **kwargs: Any
) -> Any:
    """Run the suite with a rich progress bar (inline runs print a line each: Lightning draws their bar)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from harness.runner import run_suite

    def report(outcome: Any, i: int, n: int) -> None:
        mark = "[green]done[/]" if outcome.ok else f"[red]{outcome.status.lower()}[/]"
        note = f" ({outcome.error})" if outcome.error else ""
        console.print(
            f"{_e(f'[{i}/{n}]')} {mark} {_e(outcome.row)} {_e(f'[{outcome.key}]')} in {outcome.seconds:.0f} s{_e(note)}"
        )

    executor, workers = kwargs["executor"], kwargs["workers"]
    kwargs.update(only=only, slurm=slurm)
    if executor == "inline":
        return run_suite(suite, profile, on_outcome=report, **kwargs)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(_e(f"{suite.name} ({executor}, {workers} workers)"), total=None)

        def start(planned: Any) -> None:
            progress.update(task, total=sum(p.action != "skip" for p in planned))

        def advance(outcome: Any, i: int, n: int) -> None:
            report(outcome, i, n)
            progress.advance(task)

        return run_suite(suite, profile, on_outcome=advance, on_start=start, **kwargs)


@main.command(name="plan")
@_suite_argument
@_common_options
@click.option("--force", is_flag=True, help="Plan as `run --force` would (run everything again).")
def plan_command(
    suite: str,
    profile: str,
    only: tuple[str, ...],
    tracking_uri: str | None,
    runs_dir: str,
    overrides: tuple[str, ...],
    force: bool,
) -> None:
    """Show the runs a `run` would execute (and those it would skip as finished), as a table."""
    from harness import tracking

    loaded = _load(suite)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    planned = _plan(loaded, profile, uri, only, force, runs_dir, parse_set(overrides))
    todo = sum(p.action != "skip" for p in planned)
    console = _console()
    console.print(
        _plan_table(planned, _e(f"{loaded.name} [{profile}]: {todo} of {len(planned)} runs would execute"))
    )


@main.command()
@_suite_argument
@_common_options
@click.option(
    "--runs", "show_runs", is_flag=True, help="One line per run (with its MLflow run id and error)."
)
def status(
    suite: str,
    profile: str,
    only: tuple[str, ...],
    tracking_uri: str | None,
    runs_dir: str,
    overrides: tuple[str, ...],
    show_runs: bool,
) -> None:
    """Per row of the suite: how many runs are finished, running, failed, missing."""
    from rich.table import Table

    from harness import tracking

    loaded = _load(suite)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    planned = _plan(loaded, profile, uri, only, False, runs_dir, parse_set(overrides))
    states = tracking.key_states(uri, loaded.name, [p.spec.key for p in planned])
    console = _console()
    columns = ("finished", "running", "failed", "missing")
    groups: dict[tuple[str, str], dict[str, int]] = {}
    for p in planned:
        counts = groups.setdefault((p.spec.row, _axes_text(p.spec)), dict.fromkeys(columns, 0))
        counts[p.state] += 1
    table = Table(title=_e(f"{loaded.name} [{profile}] in {uri}"), title_justify="left")
    table.add_column("row")
    table.add_column("axes")
    for column in columns:
        table.add_column(column, justify="right")
    colour = {"finished": "green", "running": "yellow", "failed": "red", "missing": "dim"}
    for (row, axes), counts in groups.items():
        table.add_row(
            _e(row), _e(axes), *(f"[{colour[c]}]{counts[c]}[/]" if counts[c] else "0" for c in columns)
        )
    totals = {c: sum(g[c] for g in groups.values()) for c in columns}
    table.add_row("[bold]total[/]", "", *(str(totals[c]) for c in columns))
    console.print(table)
    if show_runs:
        runs = Table()
        for column in ("row", "seed", "axes", "key", "state", "mlflow run", "error"):
            runs.add_column(column)
        errors = _errors(uri, [states[p.spec.key].run_id for p in planned if p.state == "failed"])
        for p in planned:
            state = states.get(p.spec.key)
            run_id = state.run_id if state else None
            runs.add_row(
                _e(p.spec.row),
                str(p.spec.seed),
                _e(_axes_text(p.spec)),
                p.spec.key,
                p.state,
                run_id or "",
                _e(errors.get(run_id, "")),
            )
        console.print(runs)


def _errors(uri: str, run_ids: list[str | None]) -> dict[str, str]:
    """The `error` tag of each failed run (first line)."""
    from harness import tracking

    if not run_ids:
        return {}
    c = tracking.client(uri)
    out = {}
    for run_id in filter(None, run_ids):
        message = c.get_run(run_id).data.tags.get("error", "")
        out[run_id] = message.splitlines()[0][:200] if message else ""
    return out


@main.command()
@click.option(
    "--tracking-uri", help="MLflow store. Default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here."
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Server processes.")
def ui(tracking_uri: str | None, host: str, port: int, workers: int) -> None:
    """Start `mlflow ui` on the tracking store and print its URL (Ctrl-C stops it)."""
    from harness import tracking

    uri = tracking.resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        click.echo(f"The tracking server serves its own UI: {uri}")
        return
    if not tracking.store_exists(uri):
        raise click.ClickException(
            f"no MLflow store at {uri} yet: run a suite first (or pass --tracking-uri)"
        )
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    click.echo(f"MLflow UI for {uri} at http://{host}:{port}  (Ctrl-C to stop)", err=False)
    sys.stdout.flush()
    try:
        sys.exit(process.wait())
    except KeyboardInterrupt:
        process.terminate()
        process.wait(10)


if __name__ == "__main__":
    main()
