"""What a figure shows: one image, its ground truth and a model's detections, in original image
coordinates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from shapeprop.data.masks import annotation_to_mask
from shapeprop.eval.coco import bbox_xywh

MASK_THRESHOLD = 0.5  # as in evaluation (`instances_to_results`: p > 0.5)


@dataclass
class Detection:
    """One detection in original image coordinates."""

    box: np.ndarray  # [4] XYXY
    label: str
    score: float
    mask: np.ndarray  # [H, W] mask probabilities, pasted into the image
    saliency: np.ndarray | None = None  # [S, S] RoI map over `box` (ShapeProp only)
    shape_activation: np.ndarray | None = None  # [S, S] RoI map over `box` (ShapeProp only)


@dataclass
class GroundTruth:
    """The non-crowd annotations of an image that have a mask."""

    boxes: np.ndarray  # [G, 4] XYXY
    labels: list[str]
    masks: np.ndarray  # [G, H, W] bool


@dataclass
class ImageView:
    """One image with its ground truth and a model's detections (highest score first)."""

    image_id: Any
    image: np.ndarray  # [H, W, 3] uint8
    ground_truth: GroundTruth
    detections: list[Detection] = field(default_factory=list)

    @property
    def has_maps(self) -> bool:
        return any(d.saliency is not None for d in self.detections)

    def shown(self, min_score: float, max_detections: int) -> list[Detection]:
        """The detections a figure draws: score >= `min_score`, at most `max_detections`, best first."""
        return [d for d in self.detections if d.score >= min_score][:max_detections]


def ground_truth(record: dict[str, Any], class_names: Sequence[str]) -> GroundTruth:
    """Boxes, class names and binary masks of the record's non-crowd annotations that have a mask."""
    height, width = int(record["height"]), int(record["width"])
    anns = [
        a for a in record.get("annotations", []) if not a.get("iscrowd") and a.get("segmentation") is not None
    ]
    boxes = np.array([bbox_xywh(a) for a in anns], dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    masks = np.zeros((len(anns), height, width), dtype=bool)
    for i, ann in enumerate(anns):
        masks[i] = annotation_to_mask(ann, height, width).astype(bool)
    return GroundTruth(boxes, [class_names[a["category_id"]] for a in anns], masks)


def detections_from_output(output: dict[str, torch.Tensor], class_names: Sequence[str]) -> list[Detection]:
    """Detections of one detector output (boxes, 1-based labels, scores, masks [N,1,H,W], and with
    ShapeProp `saliency` / `shape_activation` [N,1,S,S]), highest score first."""
    order = torch.argsort(output["scores"].detach().cpu(), descending=True).tolist()
    maps = {k: output[k].detach().float().cpu() for k in ("saliency", "shape_activation") if k in output}
    out = []
    for i in order:
        label = int(output["labels"][i])
        out.append(
            Detection(
                box=output["boxes"][i].detach().float().cpu().numpy(),
                label=class_names[label - 1] if 0 < label <= len(class_names) else f"class {label}",
                score=float(output["scores"][i]),
                mask=output["masks"][i, 0].detach().float().cpu().numpy(),
                saliency=maps["saliency"][i, 0].numpy() if "saliency" in maps else None,
                shape_activation=(
                    maps["shape_activation"][i, 0].numpy() if "shape_activation" in maps else None
                ),
            )
        )
    return out
