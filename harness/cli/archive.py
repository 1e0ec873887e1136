"""`shapeprop-bench archive export|import`: finished runs to a committable file and back."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from harness.cli.options import tracking_uri_option


@click.group("archive")
def archive() -> None:
    """Finished runs as a plain JSON Lines file (tags, params, final metrics, CSV tables), and back.

    The file is what the reports need, small enough to commit beside them: a lost or fresh store
    gets its runs back with `import` (then `run` skips them and `report` renders them), and stores
    of several clusters merge into one. Example:

        shapeprop-bench archive export --profile mini --out reports/mini/runs.jsonl
        shapeprop-bench archive import reports/mini/runs.jsonl
    """


@archive.command("export")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), required=True, help="The archive file.")
@click.option("--profile", default=None, help="Only runs of this suite profile [default: every profile].")
@click.option("--suite", "suites", multiple=True, help="Only runs of this suite; repeatable [default: all].")
@tracking_uri_option
def export(out_file: str, profile: str | None, suites: tuple[str, ...], tracking_uri: str | None) -> None:
    """Write the store's FINISHED runs to OUT (the newest per suite and run key), keeping the runs
    OUT already holds that the store lacks."""
    from harness import tracking
    from harness.archive import ArchiveError, export_runs

    uri = tracking.resolve_tracking_uri(tracking_uri)
    if not tracking.store_exists(uri):
        raise click.ClickException(
            f"no MLflow store at {uri} (pass --tracking-uri or set $MLFLOW_TRACKING_URI)"
        )
    try:
        exported, kept = export_runs(uri, Path(out_file), profile, suites, progress=sys.stderr.isatty())
    except ArchiveError as err:
        raise click.ClickException(f"{err}; nothing was written") from None
    click.echo(f"{out_file}: {exported} run(s) from {uri}, {kept} kept from the file")


@archive.command("import")
@click.argument("archive_file", type=click.Path(exists=True, dir_okay=False))
@tracking_uri_option
def import_(archive_file: str, tracking_uri: str | None) -> None:
    """Recreate ARCHIVE_FILE's runs in the store as FINISHED runs (tag archived_from), skipping
    those whose suite and run key the store already holds FINISHED."""
    from harness import tracking
    from harness.archive import ArchiveError, import_runs

    uri = tracking.resolve_tracking_uri(tracking_uri)
    try:
        result = import_runs(uri, Path(archive_file), progress=sys.stderr.isatty())
    except ArchiveError as err:
        raise click.ClickException(f"{err}; nothing was imported") from None
    click.echo(f"{uri}: {result.added} run(s) imported, {result.skipped} already finished there")
