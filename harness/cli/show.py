"""`shapeprop-bench show`: qualitative figures of finished runs (paper Figs. 2, 7, 8); the work is
done by `harness.show`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from harness.show import FigureOptions

from harness.cli.options import echoed, parse_set, runs_dir_option, set_option, tracking_uri_option


def figure_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of what to draw; the command receives them as one `FigureOptions` (`figures=`)."""

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        num_images: int,
        image_ids: tuple[str, ...],
        pick_seed: int,
        max_detections: int,
        min_score: float,
        panel: int,
        device: str,
        **kwargs: Any,
    ) -> Any:
        from harness.show import FigureOptions

        figures = FigureOptions(num_images, image_ids, pick_seed, max_detections, min_score, panel, device)
        return command(*args, figures=figures, **kwargs)

    decorators = [
        click.option(
            "--images",
            "num_images",
            type=click.IntRange(min=1),
            default=4,
            show_default=True,
            help="Images drawn (with --pick-seed) from the run's evaluation split.",
        ),
        click.option(
            "--image-id",
            "image_ids",
            multiple=True,
            help="Show this image of the evaluation split. Repeatable.",
        ),
        click.option("--pick-seed", type=int, default=0, show_default=True, help="Seed of the image draw."),
        click.option(
            "--detections",
            "max_detections",
            type=click.IntRange(min=1),
            default=3,
            show_default=True,
            help="Detections per image in the per-detection figures (highest scores first).",
        ),
        click.option(
            "--min-score",
            type=click.FloatRange(0, 1),
            default=0.5,
            show_default=True,
            help="Draw detections from this score.",
        ),
        click.option(
            "--panel",
            type=click.IntRange(min=64),
            default=192,
            show_default=True,
            help="Panel size in pixels.",
        ),
        click.option(
            "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
        ),
    ]
    for decorator in reversed(decorators):
        wrapper = decorator(wrapper)
    return wrapper


@click.command("show")
@click.argument("run_ids", nargs=-1, metavar="[RUN_ID]...")
@click.option("--suite", help="Pick runs by suite (name or YAML file) + --row (+ --seed, --profile).")
@click.option("--row", "rows", multiple=True, help="Row label of the suite; give two to compare. Repeatable.")
@click.option("--seed", type=int, help="The run's seed (needed when the row has runs of several seeds).")
@click.option("--profile", help="The run's suite profile (needed when the row has runs of several).")
@tracking_uri_option
@runs_dir_option
@figure_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="reports",
    show_default=True,
    help="PNGs go to OUT/qualitative/.",
)
@click.option("--log/--no-log", default=True, show_default=True, help="Log the PNGs to the runs in MLflow.")
@set_option
def show(
    run_ids: tuple[str, ...],
    suite: str | None,
    rows: tuple[str, ...],
    seed: int | None,
    profile: str | None,
    tracking_uri: str | None,
    runs_dir: str,
    figures: FigureOptions,
    out_dir: str,
    log: bool,
    overrides: tuple[str, ...],
) -> None:
    """Qualitative figures of one run, or of two runs side by side (e.g. baseline vs ShapeProp).

    Per image and run: one row per detection with the crop and its box, the instance saliency,
    the shape activation, the predicted mask and the ground-truth mask. For two runs also their
    predicted masks on the same images, side by side (the paper's Fig. 7). Examples:

    \b
        shapeprop-bench show 1c57b98cc2f141b89f64abce1e8b28dd
        shapeprop-bench show --suite demo --profile mini --row baseline --row "baseline + ShapeProp"
    """
    if rows and not suite:
        raise click.UsageError("--row needs --suite")
    if suite and not rows:
        raise click.UsageError("--suite needs --row (the row label of the run to show)")
    if len(run_ids) + len(rows) not in (1, 2):
        raise click.UsageError("name one run, or two to compare: RUN_ID arguments and/or --suite with --row")
    from harness import show as qualitative
    from harness import tracking
    from harness.stored_runs import ShowError, find_runs

    uri = tracking.resolve_tracking_uri(tracking_uri)
    if not tracking.store_exists(uri):
        raise ShowError(f"no MLflow store at {uri}: run a suite first (or pass --tracking-uri)")
    client = tracking.client(uri)
    with echoed("harness.stored_runs", "harness.show"):
        runs = find_runs(client, uri, run_ids, suite, rows, seed, profile, parse_set(overrides))
        drawn = qualitative.draw_runs(client, runs, Path(runs_dir), Path(out_dir), figures)
    if log:
        qualitative.log_figures(client, drawn)
    for s in drawn.shown:
        where = f" (logged to MLflow run {s.run_id} under {qualitative.ARTIFACT_DIR}/)" if log else ""
        click.echo(f"{s.label}{where}:")
        for path in drawn.written[s.run_id]:
            click.echo(f"  {path}")
    if drawn.comparison is not None:
        click.echo(f"Side by side: {drawn.comparison}")
    click.echo(f"Browse the runs: mlflow ui --backend-store-uri {uri}")
