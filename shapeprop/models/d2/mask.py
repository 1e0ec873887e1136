"""The detectron2 side of the mask branch: `Instances` in and out of the framework-neutral core
(`shapeprop.models.mask_branch.mask_branch_losses` / `mask_branch_predict`), which holds the logic.

Training takes RoIs as detectron2 `Instances` with `proposal_boxes`, `gt_classes` (background =
`num_classes`) and `gt_index`, the index of the matched GT: the ROI heads and RetinaMask give every
GT `Instances` a `gt_index` field before sampling, so detectron2 copies it onto the RoIs with the
other `gt_*` fields. The GT `Instances` carry `gt_boxes`, `gt_classes`, `gt_masks` (BitMasks or
PolygonMasks) and optionally `gt_has_mask` (missing means: every GT has a mask). Inference adds
`pred_masks` (probabilities [N, 1, 2S, 2S], as detectron2's own mask head) and, with ShapeProp,
the `saliency` and `shape_activation` RoI maps [N, 1, S, S] to the detections.
"""

from __future__ import annotations

from typing import Any

import torch
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import BitMasks, Boxes, Instances
from torch import nn

from shapeprop.models.labels import class_to_label, from_d2_roi_classes
from shapeprop.models.mask_branch import mask_branch_losses, mask_branch_predict


def index_ground_truth(targets: list[Instances]) -> list[Instances]:
    """Give each GT its index (`gt_index`), which detectron2 copies to the RoIs matched to it."""
    for t in targets:
        t.gt_index = torch.arange(len(t), device=t.gt_classes.device)
    return targets


def _target(gt: Instances) -> dict[str, Any]:
    masks = gt.gt_masks
    return {
        "boxes": gt.gt_boxes.tensor,
        "labels": class_to_label(gt.gt_classes),
        "masks": masks.tensor if isinstance(masks, BitMasks) else masks,
        "has_mask": gt.gt_has_mask
        if gt.has("gt_has_mask")
        else torch.ones_like(gt.gt_classes, dtype=torch.bool),
    }


def _pool(pooler: ROIPooler, features: list[torch.Tensor]):
    return lambda boxes: pooler(features, [Boxes(b) for b in boxes])


def mask_losses(
    features: list[torch.Tensor],
    pooler: ROIPooler,
    mask_head: nn.Module,
    shapeprop: nn.Module | None,
    rois: list[Instances],
    targets: list[Instances],
    num_classes: int,
    shapeprop_rois_per_image: int | None = None,
) -> dict[str, torch.Tensor]:
    """`loss_mask` and, with ShapeProp, `loss_mil` and `loss_shape`; `mask_head` is detectron2's
    (its `layers` give the logits, the loss is the core's)."""
    labels, matched = [], []
    for r in rois:
        classes = r.gt_classes
        labels.append(from_d2_roi_classes(classes, num_classes))
        matched.append(r.gt_index if r.has("gt_index") else torch.zeros_like(classes))
    return mask_branch_losses(
        _pool(pooler, features),
        mask_head.layers,
        [r.proposal_boxes.tensor for r in rois],
        labels,
        matched,
        [_target(t) for t in targets],
        shapeprop,
        shapeprop_rois_per_image,
    )


def mask_inference(
    features: list[torch.Tensor],
    pooler: ROIPooler,
    mask_head: nn.Module,
    shapeprop: nn.Module | None,
    instances: list[Instances],
) -> list[Instances]:
    """Adds `pred_masks` (and with ShapeProp `saliency`, `shape_activation`) to `instances`, which
    hold `pred_boxes` and 0-based `pred_classes`."""
    results = mask_branch_predict(
        _pool(pooler, features),
        mask_head.layers,
        [i.pred_boxes.tensor for i in instances],
        [class_to_label(i.pred_classes) for i in instances],
        shapeprop,
    )
    for inst, result in zip(instances, results, strict=True):
        inst.pred_masks = result.pop("masks")
        for key, value in result.items():
            inst.set(key, value)
    return instances
