"""Qualitative figures of finished runs (paper Figs. 2, 7, 8), for `shapeprop-bench show`.

The runs come from `harness.stored_runs`. The images are drawn from the run's evaluation split
(seeded, or by id); the trained model runs on them; PNGs go under `<out>/qualitative/` and are
logged to the run in MLflow (artifact folder `qualitative/`):

- per run and image: one row per detection: crop with box, instance saliency, shape activation,
  predicted mask, ground-truth mask (`shapeprop.visualize.render_detections`);
- with two runs: their predicted masks side by side on the same images (Fig. 7), logged to both.
"""

from __future__ import annotations

import logging
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import tracking
from harness.errors import OptionError

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from shapeprop.config import ExperimentConfig

from harness.stored_runs import (
    COMPARISON_DETECTIONS,
    ShowError,
    ShownRun,
    find_checkpoint,
    load_config,
    load_model,
    slug,
)

ARTIFACT_DIR = "qualitative"


__all__ = ["ShowError", "draw_runs", "log_figures", "pick_records"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- images


def evaluation_records(cfg: ExperimentConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """The records the run evaluated on (test split, first `eval.max_images`) and the class names."""
    from shapeprop.data import source
    from shapeprop.data.records import DataError

    try:
        test = source.load_data(cfg.data, cfg.data.test_split)
    except DataError as err:
        raise ShowError(f"cannot load the run's evaluation split: {err}") from None
    records = test.records[: cfg.eval.max_images] if cfg.eval.max_images else test.records
    if not records:
        raise ShowError(f"the evaluation split {cfg.data.dataset}/{cfg.data.test_split} has no images")
    return records, list(test.metadata.classes)


def pick_records(
    records: list[dict[str, Any]], count: int, seed: int, image_ids: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The records with `image_ids` (in that order), else `count` records drawn with `seed` (in split order)."""
    if image_ids:
        by_id = {str(r["image_id"]): r for r in records}
        missing = [i for i in image_ids if i not in by_id]
        if missing:
            some = ", ".join(list(by_id)[:10])
            raise ShowError(
                f"image id(s) {', '.join(missing)} not in the run's evaluation split "
                f"({len(by_id)} images: {some}{', ...' if len(by_id) > 10 else ''})"
            )
        return [by_id[i] for i in image_ids]
    picked = sorted(random.Random(seed).sample(range(len(records)), min(count, len(records))))
    return [records[i] for i in picked]


def _same_evaluation_data(a: ExperimentConfig, b: ExperimentConfig) -> bool:
    keys = ("dataset", "root", "test_split", "options")
    return all(getattr(a.data, k) == getattr(b.data, k) for k in keys)


# --------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class FigureOptions:
    """What `draw_runs` draws: which images, how many detections, from which score, how large."""

    num_images: int = 4
    image_ids: tuple[str, ...] = ()
    pick_seed: int = 0
    max_detections: int = 3
    min_score: float = 0.5
    panel: int = 192
    device: str = "auto"


@dataclass
class Drawn:
    """The figures `draw_runs` wrote: per run id its PNGs, and the side-by-side one (two runs)."""

    shown: list[ShownRun]
    written: dict[str, list[Path]]
    comparison: Path | None = None


def draw_runs(
    client: MlflowClient, runs: list[Run], runs_dir: Path, out_dir: Path, options: FigureOptions
) -> Drawn:
    """Per run and image the per-detection figure; for two runs also their masks side by side.
    PNGs go under `<out_dir>/qualitative/`."""
    import torch

    from shapeprop import visualize

    device = options.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise OptionError("CUDA is not available here", "--device")
    root = out_dir / ARTIFACT_DIR
    with tempfile.TemporaryDirectory(prefix="shapeprop-show-") as tmp:
        scratch = Path(tmp)
        shown = []
        for run in runs:
            cfg = load_config(client, run, runs_dir, scratch)
            checkpoint, source = find_checkpoint(client, run, runs_dir, scratch)
            shown.append(ShownRun(run, cfg, checkpoint, source))
        if len(shown) == 2 and not _same_evaluation_data(shown[0].config, shown[1].config):
            raise ShowError(
                f"runs {shown[0].run_id} and {shown[1].run_id} were evaluated on different data "
                "(data.dataset / root / test_split / options differ): they cannot be compared image by image"
            )
        records, classes = evaluation_records(shown[0].config)
        picked = pick_records(records, options.num_images, options.pick_seed, options.image_ids)

        all_views, drawn = [], Drawn(shown, {s.run_id: [] for s in shown})
        for s in shown:
            model, step = load_model(s, len(classes), options.min_score, options.max_detections)
            data = s.config.data
            views = visualize.predict_views(model, picked, classes, data.min_size, data.max_size, device)
            all_views.append(views)
            for view in views:
                title = (
                    f"{s.label} (seed {s.tags.get('seed', '?')}), image {view.image_id}\n"
                    f"suite {s.tags.get('suite', '?')}, run {s.run_id[:8]}, step {step}, "
                    f"{data.dataset}/{data.test_split}"
                )
                fig = visualize.render_detections(
                    view, title, options.max_detections, options.min_score, options.panel
                )
                path = root / s.slug / f"image-{slug(str(view.image_id))}.png"
                drawn.written[s.run_id].append(visualize.save_png(fig, path))
            log.info(
                f"run {s.run_id} ({s.label}, seed {s.tags.get('seed', '?')}, step {step}; "
                f"checkpoint from {s.checkpoint_source})"
            )
        if len(shown) == 2:
            names = [s.label for s in shown]
            if names[0] == names[1]:
                names = [f"{s.label} ({s.run_id[:8]})" for s in shown]
            title = (
                f"{names[0]}  vs  {names[1]}: predicted masks\n"
                f"{shown[0].config.data.dataset}/{shown[0].config.data.test_split}, "
                f"runs {shown[0].run_id[:8]} and {shown[1].run_id[:8]}"
            )
            fig = visualize.render_comparison(
                all_views, names, title, COMPARISON_DETECTIONS, options.min_score
            )
            drawn.comparison = visualize.save_png(
                fig, root / f"compare-{shown[0].slug}-vs-{shown[1].slug}.png"
            )
            for s in shown:
                drawn.written[s.run_id].append(drawn.comparison)
    return drawn


def log_figures(client: MlflowClient, drawn: Drawn) -> None:
    """Log each run's figures to it in MLflow, under `qualitative/` (the comparison at its top)."""
    from mlflow.exceptions import MlflowException

    for s in drawn.shown:
        for path in drawn.written[s.run_id]:
            subdir = ARTIFACT_DIR if path == drawn.comparison else f"{ARTIFACT_DIR}/{s.slug}"
            try:
                tracking.with_retry(
                    lambda r=s.run_id, p=path, d=subdir: client.log_artifact(r, str(p), d),
                    f"upload {path.name}",
                )
            except (MlflowException, OSError) as err:
                raise ShowError(
                    f"{path} is written, but logging it to run {s.run_id} failed: {err}"
                ) from None
