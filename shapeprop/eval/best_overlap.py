"""The best-overlap analysis of Sec. 4.3: how well a probabilistic RoI map covers its GT mask.

For a map M pasted into the image at its detection's box, the best overlap with a GT mask T is
max over thresholds t of IoU(M >= t, T). Each RoI map is divided by its maximum first, so the
measure does not depend on the map's scale (the paper's point about this metric).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.ops import box_iou

from shapeprop.data.masks import annotation_to_mask
from shapeprop.eval.coco import bbox_xywh

DEFAULT_THRESHOLDS = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))
TABLE_COLUMNS = ["image_id", "gt_id", "area", "saliency_iou", "shape_iou"]


def best_iou(prob: np.ndarray, gt: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> float:
    """max over t in `thresholds` of IoU(prob >= t, gt) for one [H, W] map and one binary mask."""
    gt = gt.astype(bool)
    best = 0.0
    for t in thresholds:
        pred = prob >= t
        union = np.logical_or(pred, gt).sum()
        if union:
            best = max(best, float(np.logical_and(pred, gt).sum()) / float(union))
    return best


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """Scale each non-negative [S, S] map of [N, 1, S, S] so that its maximum is 1 (an all-zero map stays 0)."""
    flat = maps.flatten(1).float().clamp_min(0)
    return (flat / flat.max(dim=1, keepdim=True).values.clamp_min(1e-12)).view_as(maps)


def paste_maps(maps: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Paste [N, 1, S, S] RoI maps into an image of `height` x `width` at XYXY `boxes` -> [N, H, W]."""
    if len(maps) == 0:
        return maps.new_zeros((0, height, width))
    return paste_masks_in_image(maps.float(), boxes.float(), (height, width), padding=1)[:, 0]


def best_overlap_table(
    records: Sequence[dict[str, Any]],
    detections: dict[Any, dict[str, torch.Tensor]],
    match_iou: float = 0.5,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> pd.DataFrame:
    """One row per GT mask that has a matched detection: image_id, gt_id, area, saliency_iou, shape_iou.

    `detections[image_id]` holds `boxes` [N,4] XYXY in original image coordinates, `saliency` and
    `shape_activation` [N,1,S,S]. A GT is matched to the detection with the highest box IoU
    (class-agnostic, as the shape prior is) if that IoU is at least `match_iou`. `gt_id` is the
    annotation's `id` if it has one, else its index in the record.
    """
    rows = []
    for rec in records:
        det = detections.get(rec["image_id"])
        if det is None or len(det["boxes"]) == 0:
            continue
        h, w = int(rec["height"]), int(rec["width"])
        anns = [
            (ann.get("id", i), ann)
            for i, ann in enumerate(rec.get("annotations", []))
            if not ann.get("iscrowd", 0) and ann.get("segmentation") is not None
        ]
        if not anns:
            continue
        gt_boxes = torch.tensor([bbox_xywh(a) for _, a in anns], dtype=torch.float32)
        gt_boxes[:, 2:] += gt_boxes[:, :2]
        iou = box_iou(gt_boxes, det["boxes"].float().cpu())
        best, idx = iou.max(dim=1)
        keep = torch.nonzero(best >= match_iou).flatten().tolist()
        if not keep:
            continue
        sel = idx[keep]
        boxes = det["boxes"].float().cpu()[sel]
        saliency = paste_maps(normalise_maps(det["saliency"].cpu()[sel]), boxes, h, w).numpy()
        shape = paste_maps(normalise_maps(det["shape_activation"].cpu()[sel]), boxes, h, w).numpy()
        for j, g in enumerate(keep):
            gt_id, ann = anns[g]
            mask = annotation_to_mask(ann, h, w).astype(bool)
            rows.append(
                {
                    "image_id": rec["image_id"],
                    "gt_id": gt_id,
                    "area": int(mask.sum()),
                    "saliency_iou": best_iou(saliency[j], mask, thresholds),
                    "shape_iou": best_iou(shape[j], mask, thresholds),
                }
            )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
