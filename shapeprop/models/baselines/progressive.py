"""Progressive Mask R-CNN baseline: train on the images with masks, pseudo-label the box-only
instances with that model, then (in `run_experiment`) retrain from scratch on everything.

The pseudo mask of a box-only instance is the stage-1 mask branch's prediction on its GT box and
GT class (an annotator model, as in the paper), pasted at the original image size. Stage 1 lives
in its own directory (checkpoints, resume) and its pseudo masks are cached there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torchvision.models.detection.roi_heads import paste_masks_in_image

from shapeprop.config import ExperimentConfig
from shapeprop.contract import ExperimentCallbacks
from shapeprop.data.loading import DetectionDataset
from shapeprop.data.masks import mask_to_rle
from shapeprop.engine.train import train_detector
from shapeprop.eval.coco import bbox_xywh
from shapeprop.files import write_atomic
from shapeprop.models.mask_branch import find_mask_branch

PSEUDO_FILE = "pseudo_masks.json"


class _Stage1Callbacks(ExperimentCallbacks):
    """Forwards stage-1 training metrics with a `stage1_` prefix; the rest stays quiet."""

    def __init__(self, inner: ExperimentCallbacks):
        self.inner = inner

    def on_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.inner.on_metrics({f"stage1_{k}": v for k, v in metrics.items()}, step)


@torch.no_grad()
def masks_for_boxes(
    model: nn.Module,
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    out_size: tuple[int, int],
    scale: tuple[float, float],
) -> torch.Tensor:
    """Mask probabilities [N, H, W] at `out_size` from the detector's mask branch on given boxes.

    `image` is the network-input (resized) image, `boxes` XYXY in its coordinates, `labels` 1-based,
    `scale` the (x, y) factors from the original to the resized image.
    """
    image_list, _ = model.transform([image])
    features = model.backbone(image_list.tensors)
    probs = find_mask_branch(model).predict(features, [boxes], [labels], image_list.image_sizes)[0]["masks"]
    sx, sy = scale
    original = boxes / torch.tensor([sx, sy, sx, sy], device=boxes.device)
    return paste_masks_in_image(probs, original, out_size)[:, 0]


def pseudo_label(
    model: nn.Module, records: list[dict[str, Any]], min_size: int, max_size: int
) -> list[dict[str, Any]]:
    """New records where each non-crowd annotation without a mask gets the model's mask for its box."""
    model.eval()
    device = next(model.parameters()).device
    dataset = DetectionDataset(records, min_size, max_size, hflip=False, train=False)
    out = []
    for i, rec in enumerate(records):
        todo = [
            a
            for a, ann in enumerate(rec["annotations"])
            if not ann.get("has_mask") and not ann.get("iscrowd")
        ]
        if not todo:
            out.append(rec)
            continue
        image, _ = dataset[i]
        h, w = image.shape[-2:]
        sx, sy = w / rec["width"], h / rec["height"]
        boxes = torch.tensor([bbox_xywh(rec["annotations"][a]) for a in todo], dtype=torch.float32)
        boxes[:, 2:] += boxes[:, :2]
        boxes *= torch.tensor([sx, sy, sx, sy])
        labels = torch.tensor([rec["annotations"][a]["category_id"] + 1 for a in todo])
        probs = masks_for_boxes(
            model,
            image.to(device),
            boxes.to(device),
            labels.to(device),
            (rec["height"], rec["width"]),
            (sx, sy),
        )
        anns = list(rec["annotations"])
        for a, prob in zip(todo, probs, strict=True):
            rle = mask_to_rle((prob > 0.5).cpu().numpy())
            anns[a] = dict(anns[a], segmentation=rle, has_mask=True, pseudo_mask=True)
        out.append(dict(rec, annotations=anns))
    return out


def progressive_pseudo_masks(
    cfg: ExperimentConfig,
    records: list[dict[str, Any]],
    build: Callable[[], nn.Module],
    stage_dir: Path,
    callbacks: ExperimentCallbacks | None = None,
    progress: bool = True,
    log_every: int = 20,
) -> list[dict[str, Any]]:
    """Stage 1 (train on the images that have at least one mask, same schedule) and pseudo-labelling.

    Returns the records with pseudo masks; they are cached in `stage_dir/pseudo_masks.json`.
    """
    stage_dir = Path(stage_dir)
    cache = stage_dir / PSEUDO_FILE
    if cache.is_file():
        return json.loads(cache.read_text())
    masked = [r for r in records if any(a.get("has_mask") and not a.get("iscrowd") for a in r["annotations"])]
    if not masked:
        raise ValueError("progressive baseline: no training image has a mask to train the stage-1 model on")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build()
    stage1_cfg = {"stage": 1, "seed": cfg.seed, "model": cfg.model.model_dump(mode="json")}
    train_detector(
        model,
        masked,
        cfg.data,
        cfg.schedule,
        cfg.seed,
        stage_dir,
        _Stage1Callbacks(callbacks or ExperimentCallbacks()),
        progress=progress,
        log_every=log_every,
        identity=stage1_cfg,
    )
    if torch.cuda.is_available():
        model.cuda()
    labelled = pseudo_label(model, records, cfg.data.min_size, cfg.data.max_size)
    stage_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(cache, json.dumps(labelled))
    return labelled
