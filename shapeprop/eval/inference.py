"""Run a detector over evaluation records: the one per-image inference loop, and on it COCO
results, ShapeProp maps and time per image.

`model_inputs` is the per-image loop every user shares (the evaluation's `predict`, the
boxes-given mask table of `gt_boxes`, the figures of `shapeprop.visualize.predict_views`): the
model in eval mode on the device, each record's image resized as in evaluation and moved there, in
the order of the records. `detect` is the one detector call: resized image in, detections in
original image coordinates out. Each user runs the model under `torch.no_grad` itself, so that
`predict` can time the call alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shapeprop.data.loading import DetectionDataset
from shapeprop.eval.coco import instances_to_results
from shapeprop.timing import synchronize


@dataclass(frozen=True)
class ModelInput:
    """One evaluation image as the detector takes it."""

    record: dict[str, Any]
    image: torch.Tensor  # [3, h, w] resized to min_size/max_size, on the device
    target: dict[str, Any]  # `DetectionDataset`'s target: GT at the network input size, image_id, orig_size

    @property
    def original_sizes(self) -> list[tuple[int, int]]:
        """`[(height, width)]` of the original image: the detector's `original_sizes` argument."""
        return [tuple(self.target["orig_size"])]


def model_inputs(
    model: nn.Module,
    records: Sequence[dict[str, Any]],
    min_size: int,
    max_size: int,
    device: torch.device | str = "cpu",
) -> Iterator[ModelInput]:
    """Put `model` in eval mode on `device`, then yield every record's image, resized to
    `min_size`/`max_size` (no flip) and moved to `device`, one at a time in the order of `records`.

    The caller runs the model (under `torch.no_grad`); `detect` is the usual call.
    """
    device = torch.device(device)
    model.eval().to(device)
    records = list(records)
    dataset = DetectionDataset(records, min_size, max_size, hflip=False, train=False)
    for i, record in enumerate(records):
        image, target = dataset[i]
        yield ModelInput(record, image.to(device), target)


def detect(model: nn.Module, item: ModelInput) -> dict[str, torch.Tensor]:
    """`model`'s output on one image: boxes (XYXY), 1-based labels, scores, pasted masks [N, 1, H, W]
    (and, with ShapeProp, the RoI maps), in original image coordinates."""
    return model([item.image], original_sizes=item.original_sizes)[0]


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
    preds = Predictions(results=[])
    total, count = 0.0, 0
    for item in model_inputs(model, records, min_size, max_size, device):
        if count == 0:
            for _ in range(warmup):
                detect(model, item)
        synchronize(device)
        t0 = time.perf_counter()
        out = detect(model, item)
        synchronize(device)
        total += time.perf_counter() - t0
        count += 1
        image_id = item.target["image_id"]
        preds.results += instances_to_results(
            image_id, out["boxes"], out["scores"], out["labels"] - 1, out.get("masks")
        )
        if keep_maps and "shape_activation" in out:
            preds.maps[image_id] = {k: out[k].cpu() for k in ("boxes", "saliency", "shape_activation")}
    preds.seconds_per_image = total / count if count else float("nan")
    return preds
