"""Run a detector over evaluation records: COCO results, ShapeProp maps, time per image."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shapeprop.data.loading import DetectionDataset
from shapeprop.eval.coco import instances_to_results
from shapeprop.timing import synchronize


@dataclass
class Predictions:
    """COCO result dicts, per-image RoI maps (with ShapeProp, when kept) and inference seconds per image."""

    results: list[dict[str, Any]]
    maps: dict[Any, dict[str, torch.Tensor]] = field(default_factory=dict)
    seconds_per_image: float = float("nan")


@torch.no_grad()
def predict(
    model: nn.Module,
    records: list[dict[str, Any]],
    min_size: int,
    max_size: int,
    device: torch.device | str = "cpu",
    keep_maps: bool = False,
    warmup: int = 2,
) -> Predictions:
    """Run `model` on every record, one image at a time, in original image coordinates.

    Time per image covers the model call (resized image in, boxes and pasted masks out) and is
    measured after `warmup` untimed calls on the first image. Labels are 1-based in the model and
    become 0-based `category_id`s here. With `keep_maps`, the `saliency` / `shape_activation` RoI
    maps and boxes of every image are kept (for the best-overlap analysis).
    """
    device = torch.device(device)
    model.eval().to(device)
    dataset = DetectionDataset(records, min_size, max_size, hflip=False, train=False)
    preds = Predictions(results=[])
    total, count = 0.0, 0
    for i in range(len(dataset)):
        image, target = dataset[i]
        image = image.to(device)
        sizes = [tuple(target["orig_size"])]
        if i == 0:
            for _ in range(warmup):
                model([image], original_sizes=sizes)
        synchronize(device)
        t0 = time.perf_counter()
        out = model([image], original_sizes=sizes)[0]
        synchronize(device)
        total += time.perf_counter() - t0
        count += 1
        image_id = target["image_id"]
        preds.results += instances_to_results(
            image_id, out["boxes"], out["scores"], out["labels"] - 1, out.get("masks")
        )
        if keep_maps and "shape_activation" in out:
            preds.maps[image_id] = {k: out[k].cpu() for k in ("boxes", "saliency", "shape_activation")}
    preds.seconds_per_image = total / count if count else float("nan")
    return preds
