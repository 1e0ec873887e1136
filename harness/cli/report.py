"""`shapeprop-bench report`: the paper's tables, figures and claims from the runs MLflow holds."""

from __future__ import annotations

from pathlib import Path

import click

from harness.cli.options import load_suite_argument, parse_set, set_option, tracking_uri_option
from harness.targets import numbers

TABLES, FIGURES = numbers("table"), numbers("figure")


@click.command("report")
@click.option(
    "--table",
    "tables",
    type=click.Choice(TABLES),
    multiple=True,
    help=f"Paper table N ({', '.join(TABLES)}); repeatable.",
)
@click.option(
    "--figure",
    "figures",
    type=click.Choice(FIGURES),
    multiple=True,
    help=f"Paper figure N ({', '.join(FIGURES)}); repeatable.",
)
@click.option(
    "--claims",
    is_flag=True,
    help="Test the paper's claims declared in the suite files (claims.md, claims.csv).",
)
@click.option("--profile", default="full", show_default=True, help="Report the runs of this suite profile.")
@tracking_uri_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="reports",
    show_default=True,
    help="Folder for the Markdown, LaTeX, HTML, CSV, PNG and SVG files.",
)
@click.option(
    "--suite",
    default=None,
    help="Only the runs of this suite (a suite name, or a suite file); with --claims, only its claims.",
)
@click.option(
    "--reference-dir",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Folder of the paper's numbers [default: reports/reference of this checkout].",
)
@click.option(
    "--log/--no-log", default=True, show_default=True, help="Log each report to MLflow as artifacts."
)
@set_option
def report(
    tables, figures, claims, profile, tracking_uri, out_dir, suite, reference_dir, log, overrides
) -> None:
    """Render paper tables, figures and claims from the FINISHED runs in MLflow.

    Seeds are aggregated (mean, std, n); each cell shows ours beside the paper's number and
    the difference. A cell without runs reads "missing". Example:

        shapeprop-bench report --table 4 --profile mini

    A claim is a comparison the paper makes between two rows of a suite, e.g. "Table 4: +
    ShapeProp" (row "baseline + ShapeProp" vs row "baseline", paper: +1.1 mask AP). Claims are
    declared in the suite files' `claims:` section (suites/*.yaml); `--claims` pairs the two
    rows' runs by seed (and by the claim's `by` key, e.g. the data fraction of Fig. 6) and
    gives, per metric (mask AP, IoU@GT, box AP), the per-seed differences, their mean with a 95 %
    interval over seeds and test images, the p and the p adjusted within the suite's claims
    (Holm), and a verdict: the paper's direction and how its size compares with the paper's, the
    other direction, no difference (claims of none), or undecided with the seeds that would decide it.

        shapeprop-bench report --claims --profile mini

    With `--set KEY=VALUE`, only the runs whose config has that value (e.g. the runs of
    `run ... --set model.framework=detectron2`).
    """
    if not tables and not figures and not claims:
        raise click.UsageError(f"name at least one --table N or --figure {'|'.join(FIGURES)}, or --claims")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from rich.console import Console

    from harness.report.build import claims_report, figure_report, log_report, table_report
    from harness.tracking import resolve_tracking_uri, store_exists

    sets = parse_set(overrides)
    uri = resolve_tracking_uri(tracking_uri)
    if not store_exists(uri):
        raise click.ClickException(f"no MLflow store at {uri}: run a suite first (shapeprop-bench run SUITE)")
    client = MlflowClient(tracking_uri=uri)
    console = Console()
    if suite is not None and Path(suite).is_file():
        load_suite_argument(suite)  # a broken suite file fails here, naming its line
    try:
        reports = [
            table_report(int(n), client, profile, out_dir, suite, reference_dir, console, sets)
            for n in tables
        ] + [figure_report(int(n), client, profile, out_dir, suite, console, sets) for n in figures]
        if claims:
            reports.append(claims_report(client, profile, out_dir, suite, console, sets))
        for done in reports:
            if log:
                log_report(client, done)
    except (ValueError, OSError, MlflowException) as err:
        raise click.ClickException(str(err)) from None
    # Plain echo, not rich: paths and the command must not be wrapped, so they can be copied.
    for done in reports:
        where = f" (logged to MLflow run {done.mlflow_run_id})" if done.mlflow_run_id else ""
        click.echo(f"{done.name}{where}:")
        for path in done.files:
            click.echo(f"  {path}")
    click.echo(f"Browse the runs: mlflow ui --backend-store-uri {uri}")


if __name__ == "__main__":
    report()
