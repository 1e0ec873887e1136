"""`shapeprop-bench plan` and `status`: what a suite would run, and how far its runs are."""

from __future__ import annotations

from typing import Any

import click

from harness.cli.options import SuiteArgs, escape, suite_options
from harness.cli.options import console as make_console


def _axes_text(spec: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.axes.items() if k not in ("seed", "method"))


def plan_table(planned: list[Any], title: str) -> Any:
    """One line per planned run; a "trained by" column where some only evaluate another's training."""
    from rich.table import Table

    shared = any(p.trained_by for p in planned)
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
        *(["trained by"] if shared else []),
    ):
        table.add_column(column, no_wrap=column in ("key", "action", "state"))
    style = {"skip": "dim", "resume": "yellow", "run": "green", "evaluate": "cyan"}
    for i, p in enumerate(planned, start=1):
        cfg = p.spec.config
        table.add_row(
            str(i),
            p.action,
            p.state,
            escape(p.spec.row),
            p.spec.method,
            str(p.spec.seed),
            escape(_axes_text(p.spec)),
            cfg.data.dataset,
            cfg.model.backbone,
            str(cfg.schedule.max_steps),
            p.spec.key,
            *([escape(p.trained_by or "")] if shared else []),
            style=style.get(p.action),
        )
    return table


def shared_note(planned: list[Any]) -> str:
    """ ", N only evaluate (trained by another run)" where some do; else ""."""
    evaluate = sum(p.action == "evaluate" for p in planned)
    return f", {evaluate} only evaluate (trained by another run)" if evaluate else ""


@click.command(name="plan")
@suite_options
@click.option("--force", is_flag=True, help="Plan as `run --force` would (run everything again).")
def plan(args: SuiteArgs, force: bool) -> None:
    """Show the runs a `run` would execute (and those it would skip as finished), as a table.

    A run whose model another run trains (they differ only in what they evaluate) is `evaluate`:
    it starts from that training, named under "trained by"."""
    planned = args.plan(force)
    todo = sum(p.action != "skip" for p in planned)
    title = f"{args.suite.name} [{args.profile}]: {todo} of {len(planned)} runs would execute"
    title += shared_note(planned)
    make_console().print(plan_table(planned, escape(title)))


@click.command()
@suite_options
@click.option(
    "--runs", "show_runs", is_flag=True, help="One line per run (with its MLflow run id and error)."
)
def status(args: SuiteArgs, show_runs: bool) -> None:
    """Per row of the suite: how many runs are finished, running, failed, missing."""
    from rich.table import Table

    from harness import tracking

    planned = args.plan()
    uri = args.tracking_uri
    states = tracking.key_states(uri, args.suite.name, [p.spec.key for p in planned])
    console = make_console()
    columns = ("finished", "running", "failed", "missing")
    groups: dict[tuple[str, str], dict[str, int]] = {}
    for p in planned:
        counts = groups.setdefault((p.spec.row, _axes_text(p.spec)), dict.fromkeys(columns, 0))
        counts[p.state] += 1
    table = Table(title=escape(f"{args.suite.name} [{args.profile}] in {uri}"), title_justify="left")
    table.add_column("row")
    table.add_column("axes")
    for column in columns:
        table.add_column(column, justify="right")
    colour = {"finished": "green", "running": "yellow", "failed": "red", "missing": "dim"}
    for (row, axes), counts in groups.items():
        table.add_row(
            escape(row),
            escape(axes),
            *(f"[{colour[c]}]{counts[c]}[/]" if counts[c] else "0" for c in columns),
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
                escape(p.spec.row),
                str(p.spec.seed),
                escape(_axes_text(p.spec)),
                p.spec.key,
                p.state,
                run_id or "",
                escape(errors.get(run_id, "")),
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
