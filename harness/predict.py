"""`shapeprop-bench predict`: a finished run's MLflow Model (`shapeprop.serving`) on new images.

The model is named by its run (suite + row, or run id: `runs:/<run id>/model`) or by any MLflow
model URI (`models:/<registered name>/<version>`, `runs:/...`, a local folder). The images are a
folder's image files, or the images of a COCO file (in an image folder). Written to the output
folder:

- `results.json`: the instances in COCO results format (`image_id`, `category_id`, `bbox` XYWH,
  `score`, `segmentation` as compressed RLE), all the model returns (the run's evaluation
  thresholds), loadable with pycocotools' `COCO.loadRes` against the COCO file, or
- for a folder, against `images.json`, which it also writes: the COCO `images` (ids 1..N in file
  name order, `file_name` relative to the folder) and `categories` (the model's classes, ids
  0-based as in the run's evaluation);
- `overlays/<name>-<image id>.png`: each image with its instances of score >= `--min-score`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import run_model
from harness.errors import UserError
from harness.stored_runs import ShowError, find_suite_run, get_run, slug

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.tracking import MlflowClient

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
RESULTS_FILE = "results.json"
IMAGES_FILE = "images.json"
OVERLAY_DIR = "overlays"


class PredictError(UserError):
    """A model or input that `predict` cannot use; the message names the option or file."""


# --------------------------------------------------------------------------- the model


def run_model_uri(
    client: MlflowClient,
    uri: str,
    run_id: str | None = None,
    suite: str | None = None,
    row: str | None = None,
    seed: int | None = None,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> str:
    """`runs:/<id>/model` of the run named by id or by suite + row (+ seed, profile, `--set`)."""
    try:
        if run_id:
            run = get_run(client, run_id, uri)
        else:
            run = find_suite_run(client, uri, suite, row, seed, profile, overrides)  # type: ignore[arg-type]
    except ShowError as err:
        raise PredictError(str(err)) from None
    run_id = run.info.run_id
    if run.data.tags.get("kind") == "invocation":
        raise PredictError(
            f"--run-id {run_id} is the parent run of a `run` invocation; name one of its child runs"
        )
    outputs = run.outputs.model_outputs if run.outputs is not None else []
    if not outputs:
        raise PredictError(
            f"run {run_id} ({run.info.status}) has no logged model: only runs that finished since "
            "`run` logs models have one (run it again with `run --force`)"
        )
    return run_model.model_uri(run_id)


# --------------------------------------------------------------------------- the images


@dataclass
class Inputs:
    """The images to predict on, as COCO `images` entries (`file_name` absolute here), and where
    the model's class names go in the results: the COCO file's category ids, or (a folder) the
    model's 0-based ids."""

    images: list[dict[str, Any]]
    source: Path
    category_ids: dict[str, int] | None = None  # class name -> COCO category id; None: a folder
    root: Path = field(default_factory=Path)  # `file_name`s are relative to it in `images.json`


def folder_inputs(folder: Path) -> Inputs:
    """The image files directly in `folder`, in name order, as images 1..N."""
    from PIL import Image, UnidentifiedImageError

    if not folder.is_dir():
        raise PredictError(f"{folder}: no such folder (the IMAGES argument)")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise PredictError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    images = []
    for i, path in enumerate(paths, start=1):
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (UnidentifiedImageError, OSError) as err:
            raise PredictError(f"{path}: not a readable image ({err})") from None
        images.append({"id": i, "file_name": str(path), "height": height, "width": width})
    return Inputs(images, folder, root=folder)


def coco_inputs(json_path: Path, image_dir: Path) -> Inputs:
    """The images of a COCO file (annotations, if any, are not used), found in `image_dir`."""
    from shapeprop.data.coco import parse_coco
    from shapeprop.data.records import DataError, check_images_exist, read_json

    try:
        data = read_json(json_path)
        if isinstance(data, dict):
            data.setdefault("annotations", [])  # an image-info file (e.g. COCO test-dev) has none
        records, _ = parse_coco(data, json_path, image_dir)
        check_images_exist(records, f"{json_path} (images looked up in --image-dir {image_dir})")
    except DataError as err:
        raise PredictError(str(err)) from None
    if not records:
        raise PredictError(f"{json_path}: no images")
    images = [{k: r[k] for k in ("file_name", "height", "width")} | {"id": r["image_id"]} for r in records]
    names = {str(c["name"]): c["id"] for c in data["categories"]}
    return Inputs(images, json_path, names, image_dir)


def check_classes(inputs: Inputs, classes: Sequence[str]) -> None:
    """A COCO file must have a category of each of the model's classes (same name)."""
    if inputs.category_ids is None:
        return
    missing = [c for c in classes if c not in inputs.category_ids]
    if missing:
        raise PredictError(
            f"{inputs.source}: no category named {', '.join(repr(c) for c in missing)} (the model's classes: "
            f"{', '.join(classes)}; the file's: {', '.join(inputs.category_ids) or 'none'}); its results "
            "could not be read against this file"
        )


# --------------------------------------------------------------------------- predicting


@dataclass
class Written:
    results: Path
    images: Path | None
    overlays: list[Path]
    instances: int


def predict(
    model: Any,
    inputs: Inputs,
    out_dir: Path,
    min_score: float = 0.5,
    batch_size: int = 4,
    advance: Callable[[int], None] = lambda n: None,
) -> Written:
    """Run the pyfunc `model` on `inputs`, `batch_size` images a call (`advance(n)` after each),
    and write the results, (a folder) the image list and the overlays into `out_dir`."""
    import pandas as pd

    from shapeprop import serving
    from shapeprop.files import write_atomic

    classes = list(model.unwrap_python_model().classes)
    check_classes(inputs, classes)
    results: list[dict[str, Any]] = []
    overlays: list[Path] = []
    for start in range(0, len(inputs.images), batch_size):
        batch = inputs.images[start : start + batch_size]
        frame = pd.DataFrame({serving.IMAGE_COLUMN: [Path(i["file_name"]).read_bytes() for i in batch]})
        instances = model.predict(frame)
        found = serving.coco_results(instances, [i["id"] for i in batch])
        if inputs.category_ids is not None:
            for r in found:
                r["category_id"] = inputs.category_ids[classes[r["category_id"]]]
        results += found
        for row, image in enumerate(batch):
            overlays.append(_write_overlay(image, instances[instances["image"] == row], out_dir, min_score))
        advance(len(batch))
    written = Written(write_atomic(out_dir / RESULTS_FILE, json.dumps(results)), None, overlays, len(results))
    if inputs.category_ids is None:
        listed = [
            {**i, "file_name": str(Path(i["file_name"]).relative_to(inputs.root))} for i in inputs.images
        ]
        coco = {
            "images": listed,
            "categories": [{"id": i, "name": name} for i, name in enumerate(classes)],
            "annotations": [],
        }
        written.images = write_atomic(out_dir / IMAGES_FILE, json.dumps(coco, indent=1))
    return written


def _write_overlay(image: dict[str, Any], instances: pd.DataFrame, out_dir: Path, min_score: float) -> Path:
    import numpy as np
    from PIL import Image

    from shapeprop import visualize
    from shapeprop.data.masks import annotation_to_mask

    path = Path(image["file_name"])
    with Image.open(path) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    height, width = pixels.shape[:2]
    detections = [
        visualize.Detection(
            box=np.array([r["x"], r["y"], r["x"] + r["width"], r["y"] + r["height"]], dtype=np.float32),
            label=r["category"],
            score=float(r["score"]),
            mask=annotation_to_mask({"segmentation": json.loads(r["segmentation"])}, height, width).astype(
                np.float32
            ),
        )
        for r in instances.to_dict("records")
        if r["score"] >= min_score
    ]
    fig = visualize.render_overlay(pixels, detections, f"{path.name} (image {image['id']})", min_score)
    return visualize.save_png(fig, out_dir / OVERLAY_DIR / f"{slug(path.stem)}-{slug(str(image['id']))}.png")
