"""`shapeprop-bench predict`: a finished run's model on a folder of images or a COCO file; the
work is done by `harness.predict`."""

from __future__ import annotations

from pathlib import Path

import click

from harness.cli.options import console as make_console
from harness.cli.options import escape, parse_set, set_option, tracking_uri_option


@click.command("predict")
@click.argument("images", required=False, type=click.Path(path_type=Path))
@click.option(
    "--coco",
    "coco_file",
    type=click.Path(path_type=Path),
    help="Predict on the images of this COCO file (instead of IMAGES); needs --image-dir.",
)
@click.option(
    "--image-dir",
    type=click.Path(path_type=Path),
    help="The folder the COCO file's file_names are relative to.",
)
@click.option("--suite", help="Pick the run by suite (name or YAML file) + --row (+ --seed, --profile).")
@click.option("--row", help="Row label of the run in --suite.")
@click.option("--seed", type=int, help="The run's seed (needed when the row has runs of several seeds).")
@click.option("--profile", help="The run's suite profile (needed when the row has runs of several).")
@click.option("--run-id", help="Pick the run by its MLflow run id.")
@click.option(
    "--model-uri",
    help="Any MLflow model URI instead of a run, e.g. models:/NAME/VERSION (see `run --register-model`).",
)
@tracking_uri_option
@set_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default="predictions",
    show_default=True,
    help="Writes OUT/results.json (COCO results), OUT/overlays/*.png and, for IMAGES, OUT/images.json.",
)
@click.option(
    "--min-score",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Draw instances from this score in the overlays (results.json has all the model returns).",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=4, show_default=True, help="Images per model call."
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def predict(
    images: Path | None,
    coco_file: Path | None,
    image_dir: Path | None,
    suite: str | None,
    row: str | None,
    seed: int | None,
    profile: str | None,
    run_id: str | None,
    model_uri: str | None,
    tracking_uri: str | None,
    overrides: tuple[str, ...],
    out_dir: Path,
    min_score: float,
    batch_size: int,
    device: str,
) -> None:
    """Run a finished run's model on new images: COCO results and overlay images.

    The model is that of a run (--suite with --row, or --run-id: its MLflow Model runs:/<id>/model)
    or any MLflow model URI (--model-uri). The images are the image files of the folder IMAGES, or
    those of a COCO file (--coco with --image-dir). Examples:

    \b
        shapeprop-bench predict photos/ --suite demo --profile mini --row "baseline + ShapeProp"
        shapeprop-bench predict --coco val.json --image-dir val2017/ --model-uri models:/shapeprop/1
    """
    from harness import predict as predicting
    from harness import run_model, tracking

    chosen = [
        name
        for name, given in (("--suite", suite), ("--run-id", run_id), ("--model-uri", model_uri))
        if given
    ]
    if len(chosen) != 1:
        raise click.UsageError(
            "name the model once: --suite with --row, --run-id or --model-uri"
            + (f" (got {' and '.join(chosen)})" if chosen else "")
        )
    if bool(suite) != bool(row):
        raise click.UsageError("--suite and --row go together")
    if (images is None) == (coco_file is None):
        raise click.UsageError("give the images: a folder IMAGES, or --coco FILE with --image-dir")
    if coco_file is not None and image_dir is None:
        raise click.UsageError("--coco needs --image-dir (the folder its file_names are in)")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise click.BadParameter("CUDA is not available here", param_hint="--device")
    if coco_file is not None:
        inputs = predicting.coco_inputs(coco_file, image_dir)  # type: ignore[arg-type]
    else:
        inputs = predicting.folder_inputs(images)  # type: ignore[arg-type]

    uri = tracking.resolve_tracking_uri(tracking_uri)
    named = "--model-uri " if model_uri else ""
    if model_uri is None:
        if not tracking.store_exists(uri):
            raise predicting.PredictError(
                f"no MLflow store at {uri}: run a suite first (or pass --tracking-uri)"
            )
        client = tracking.client(uri)
        model_uri = predicting.run_model_uri(
            client, uri, run_id, suite, row, seed, profile, parse_set(overrides)
        )
    console = make_console()
    console.print(f"model {escape(model_uri)} ({escape(uri)})")
    try:
        model = run_model.load(uri, model_uri, None if device == "auto" else device)
    except Exception as err:  # MLflow raises several kinds for a URI it cannot resolve or load
        raise predicting.PredictError(f"{named}{model_uri}: cannot use it: {err}") from None

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("predicting", total=len(inputs.images))
        written = predicting.predict(
            model, inputs, out_dir, min_score, batch_size, lambda n: progress.advance(task, n)
        )
    console.print(f"{written.instances} instances in {len(inputs.images)} images: {escape(written.results)}")
    if written.images is not None:
        console.print(f"  their images and categories (COCO): {escape(written.images)}")
    console.print(f"  overlays (score >= {min_score:g}): {escape(out_dir / predicting.OVERLAY_DIR)}/")
