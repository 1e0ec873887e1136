"""A trained detector as an MLflow Model (the `python_function` flavor): images in, instances out.

Input: a pandas DataFrame, one image per row, in the column `image`: the bytes of an image file
(PNG, JPEG, anything PIL reads; it is converted to RGB). Over `mlflow models serve`'s REST API a
`binary` column is sent as base64 text, which MLflow decodes:

    POST /invocations
    {"dataframe_split": {"columns": ["image"], "data": [["<base64 of the PNG>"], ...]},
     "params": {"min_score": 0.5}}

Output: a DataFrame with one row per instance (the REST API answers `{"predictions": [row, ...]}`),
best score first within an image:

    image         int    the input row the instance was found in
    category_id   int    0-based class index, as in the run's evaluation
    category      str    class name
    score         float
    x, y, width, height  float  the box (COCO `bbox`, XYWH) in the image's pixels
    segmentation  str    the mask as JSON of its compressed COCO RLE: {"size": [h, w], "counts": "..."}

Parameter `min_score` (default 0): leave out instances scoring below it. Without it the instances
are exactly those the run's evaluation scored (`shapeprop.eval.inference.predict`, with the run's
`eval.score_threshold` and `eval.detections_per_image`).

The model's artifacts are the run's resolved `config.yaml`, its final weights (`weights.pt`,
`shapeprop.engine.train.write_model_weights`) and its class names (`classes.json`); `load_context`
rebuilds the detector from them (`shapeprop.models.build.load_detector`); it runs on the GPU when
there is one, else on the CPU (`loaded.unwrap_python_model().device = "cpu"` chooses).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

CONFIG_ARTIFACT = "config"
WEIGHTS_ARTIFACT = "weights"
CLASSES_ARTIFACT = "classes"
IMAGE_COLUMN = "image"
INSTANCE_COLUMNS = {  # column -> MLflow type
    "image": "long",
    "category_id": "long",
    "category": "string",
    "score": "double",
    "x": "double",
    "y": "double",
    "width": "double",
    "height": "double",
    "segmentation": "string",
}
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("binary", IMAGE_COLUMN)]),
    outputs=Schema([ColSpec(kind, name) for name, kind in INSTANCE_COLUMNS.items()]),
    params=ParamSchema([ParamSpec("min_score", "double", 0.0)]),
)


def pip_requirements() -> list[str]:
    """The model's environment: this package (which pins torch, torchvision and MLflow), not what
    MLflow would infer by importing everything the model touches."""
    from shapeprop import __version__

    return [f"shapeprop-bench=={__version__}"]


def write_artifacts(folder: Path, config: Path, checkpoint: Path, classes: Sequence[str]) -> dict[str, str]:
    """Write the model's weights and class names into `folder`; the `artifacts` argument of
    `mlflow.pyfunc.log_model` (artifact name -> local path), with the run's `config` file."""
    from shapeprop.engine.train import write_model_weights

    folder.mkdir(parents=True, exist_ok=True)
    weights = write_model_weights(Path(checkpoint), folder / "weights.pt")
    names = folder / "classes.json"
    names.write_text(json.dumps(list(classes)))
    return {CONFIG_ARTIFACT: str(config), WEIGHTS_ARTIFACT: str(weights), CLASSES_ARTIFACT: str(names)}


class ShapePropModel(mlflow.pyfunc.PythonModel):
    """The pyfunc of a trained run: see the module docstring for its input and output."""

    def load_context(self, context: Any) -> None:
        import torch
        import yaml

        from shapeprop.config import ExperimentConfig
        from shapeprop.models.build import load_detector

        artifacts = context.artifacts
        self.config = ExperimentConfig.model_validate(
            yaml.safe_load(Path(artifacts[CONFIG_ARTIFACT]).read_text())
        )
        self.classes = json.loads(Path(artifacts[CLASSES_ARTIFACT]).read_text())
        self.model, _ = load_detector(self.config, len(self.classes), artifacts[WEIGHTS_ARTIFACT])
        self.device = "cuda" if torch.cuda.is_available() else "cpu"  # where `predict` runs it

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        from PIL import Image, UnidentifiedImageError

        from shapeprop.eval.inference import predict

        min_score = float((params or {}).get("min_score", 0.0))
        images = model_input[IMAGE_COLUMN].tolist()
        # The evaluation's inference loop reads records (image files): the images go through it
        # from files, so served instances are those the evaluation computes for the same image.
        with tempfile.TemporaryDirectory(prefix="shapeprop-serve-") as tmp:
            records = []
            for row, content in enumerate(images):
                path = Path(tmp) / f"{row}.img"
                path.write_bytes(bytes(content))
                try:
                    with Image.open(path) as image:
                        width, height = image.size
                except UnidentifiedImageError:
                    raise ValueError(
                        f"row {row} of column {IMAGE_COLUMN!r}: not an image file PIL can read "
                        f"({len(content)} bytes starting {bytes(content[:8])!r}); send PNG or JPEG bytes "
                        "(base64 text over the REST API)"
                    ) from None
                records.append(
                    {
                        "file_name": str(path),
                        "height": height,
                        "width": width,
                        "image_id": row,
                        "annotations": [],
                    }
                )
            sizes = self.config.data
            found = predict(self.model, records, sizes.min_size, sizes.max_size, self.device, warmup=0)
        return instance_table(found.results, self.classes, min_score)


def instance_table(
    results: Sequence[dict[str, Any]], classes: Sequence[str], min_score: float = 0.0
) -> pd.DataFrame:
    """COCO result dicts (`image_id` = input row) as the model's output table."""
    rows = [
        {
            "image": int(r["image_id"]),
            "category_id": int(r["category_id"]),
            "category": classes[r["category_id"]],
            "score": float(r["score"]),
            **dict(zip(("x", "y", "width", "height"), (float(v) for v in r["bbox"]), strict=True)),
            "segmentation": json.dumps(r["segmentation"]),
        }
        for r in results
        if r["score"] >= min_score
    ]
    return pd.DataFrame(rows, columns=list(INSTANCE_COLUMNS))


def coco_results(instances: pd.DataFrame, image_ids: Sequence[Any]) -> list[dict[str, Any]]:
    """The model's output table as COCO result dicts (`bbox`, `score`, 0-based `category_id`,
    `segmentation` RLE), with `image_ids[row]` as the `image_id` of an instance of input `row`."""
    return [
        {
            "image_id": image_ids[int(r["image"])],
            "category_id": int(r["category_id"]),
            "bbox": [float(r[k]) for k in ("x", "y", "width", "height")],
            "score": float(r["score"]),
            "segmentation": json.loads(r["segmentation"]),
        }
        for r in instances.to_dict("records")
    ]
