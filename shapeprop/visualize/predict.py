"""Run a detector on a few records and keep, per image, what the figures draw."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from shapeprop.eval.inference import detect, model_inputs
from shapeprop.visualize.views import ImageView, detections_from_output, ground_truth


@torch.no_grad()
def predict_views(
    model: nn.Module,
    records: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    min_size: int,
    max_size: int,
    device: torch.device | str = "cpu",
) -> list[ImageView]:
    """Run `model` (a detector built by `build_detector`) on each record, one image at a time, as the
    evaluation does (`shapeprop.eval.inference.model_inputs` and `detect`: resized to `min_size` /
    `max_size`, results in original image coordinates), and pair its detections with the picture
    and its ground truth."""
    views = []
    for item in model_inputs(model, records, min_size, max_size, device):
        output = detect(model, item)
        record = item.record
        with Image.open(record["file_name"]) as picture:
            image = np.asarray(picture.convert("RGB"))
        views.append(
            ImageView(
                record["image_id"],
                image,
                ground_truth(record, class_names),
                detections_from_output(output, class_names),
            )
        )
    return views
