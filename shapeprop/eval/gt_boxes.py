"""Mask quality on ground-truth boxes: the IoU of the mask branch's mask with each GT mask, given
the GT box and class.

Mask AP mixes detection and segmentation; with a weak detector (the CPU miniatures) detection
errors dominate it and hide what ShapeProp changes, the masks. Running the mask branch on the GT
boxes measures the masks alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn
from torchvision.models.detection.roi_heads import paste_masks_in_image

from shapeprop.eval.inference import model_inputs

TABLE_COLUMNS = ["image_id", "category_id", "area", "iou"]


@torch.no_grad()
def gt_box_mask_table(
    model: nn.Module,
    records: Sequence[dict[str, Any]],
    min_size: int,
    max_size: int,
    device: torch.device | str = "cpu",
) -> pd.DataFrame:
    """One row per GT with a mask: image_id, 0-based category_id, area (pixels, network input
    size) and the IoU of the mask predicted on its box (probability > 0.5) with its mask."""
    rows = []
    for item in model_inputs(model, records, min_size, max_size, device):
        target = item.target
        keep = target["has_mask"]
        if not keep.any():
            continue
        boxes, labels = target["boxes"][keep].to(device), target["labels"][keep].to(device)
        gt = target["masks"][keep].bool().to(device)
        probs = model.masks_on_boxes(item.image, boxes, labels)  # any framework's detector
        pred = paste_masks_in_image(probs, boxes, tuple(gt.shape[-2:]), padding=1)[:, 0] > 0.5
        inter = (pred & gt).flatten(1).sum(1).float()
        union = (pred | gt).flatten(1).sum(1).float().clamp_min(1)
        areas, ious = gt.flatten(1).sum(1).tolist(), (inter / union).tolist()
        for label, area, iou in zip(labels.tolist(), areas, ious, strict=True):
            rows.append({"image_id": target["image_id"], "category_id": label - 1, "area": area, "iou": iou})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def mean_iou(table: pd.DataFrame, category_ids: Sequence[int] | None = None) -> float:
    """Mean IoU in percent over the GT of `category_ids` (all when None); NaN when there are none."""
    if category_ids is not None:
        table = table[table["category_id"].isin(list(category_ids))]
    return float(table["iou"].mean() * 100) if len(table) else float("nan")
