"""The RoI mask branch with ShapeProp on detectron2 structures, shared by the ROI heads and RetinaMask.

Training takes RoIs as detectron2 `Instances` with `proposal_boxes` and `gt_classes` (background =
`num_classes`), plus the matched GT's `gt_masks` and `gt_has_mask` on images that have GT. The
ShapeProp head runs on all RoIs (MIL needs the negative bags); its reconstruction loss and the mask
loss cover the positive RoIs whose GT has a mask (a missing `gt_has_mask` means: every GT with a
`gt_masks` entry has a mask). The shape prior is concatenated to the pooled features as the mask
head's input. Inference adds `pred_masks`, and with ShapeProp the `saliency` and `shape_activation`
RoI maps [N, 1, S, S], to the detections.
"""

from __future__ import annotations

import torch
from detectron2.layers import cat
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Instances
from torch import nn

from shapeprop.mil import assign_bags


def with_mask(rois: Instances, num_classes: int) -> torch.Tensor:
    """bool [R]: the RoI is positive and its matched GT has a mask."""
    classes = rois.gt_classes
    positive = (classes >= 0) & (classes < num_classes)
    if rois.has("gt_has_mask"):
        return positive & rois.gt_has_mask.bool()
    if rois.has("gt_masks"):
        return positive
    return torch.zeros_like(positive)


def mask_losses(
    features: list[torch.Tensor],
    pooler: ROIPooler,
    mask_head: nn.Module,
    shapeprop: nn.Module | None,
    rois: list[Instances],
    targets: list[Instances],
    num_classes: int,
    mil_iou_threshold: float,
) -> dict[str, torch.Tensor]:
    """`loss_mask` (detectron2's mask head loss) and, with ShapeProp, `loss_mil` and `loss_shape`."""
    keep = [with_mask(r, num_classes) for r in rois]
    masked = [r[k] for r, k in zip(rois, keep, strict=True)]
    if shapeprop is None:
        pooled = pooler(features, [r.proposal_boxes for r in masked])
        return mask_head(pooled, masked)

    pooled = pooler(features, [r.proposal_boxes for r in rois])
    positive = cat([(r.gt_classes >= 0) & (r.gt_classes < num_classes) for r in rois])
    classes = torch.where(positive, cat([r.gt_classes for r in rois]), 0)
    out = shapeprop(pooled, classes)
    bags = cat(
        [
            assign_bags(r.proposal_boxes.tensor, t.gt_boxes.tensor, t.gt_classes, mil_iou_threshold)[0]
            for r, t in zip(rois, targets, strict=True)
        ]
    )
    size = pooled.shape[-1]
    keep_all = cat(keep)
    shape_targets = pooled.new_zeros((len(pooled), size, size))
    parts = [r.gt_masks.crop_and_resize(r.proposal_boxes.tensor, size) for r in masked if len(r)]
    if parts:
        shape_targets[keep_all] = cat(parts).to(pooled.dtype)
    losses = dict(shapeprop.losses(out, bags, shape_targets, keep_all))
    fused = shapeprop.fuse(pooled, out)[keep_all]
    losses.update(mask_head(fused, masked))
    return losses


def mask_inference(
    features: list[torch.Tensor],
    pooler: ROIPooler,
    mask_head: nn.Module,
    shapeprop: nn.Module | None,
    instances: list[Instances],
) -> list[Instances]:
    """Adds `pred_masks` (and with ShapeProp `saliency`, `shape_activation`) to `instances`, which
    hold `pred_boxes` and 0-based `pred_classes`."""
    pooled = pooler(features, [i.pred_boxes for i in instances])
    if shapeprop is None:
        return mask_head(pooled, instances)
    size = pooled.shape[-1]
    if len(pooled):
        out = shapeprop(pooled, cat([i.pred_classes for i in instances]))
        head_input = shapeprop.fuse(pooled, out)
        saliency, activation = out.saliency, out.shape_activation
    else:
        head_input = pooled.new_zeros((0, pooled.shape[1] + shapeprop.out_channels, size, size))
        saliency = activation = pooled.new_zeros((0, 1, size, size))
    counts = [len(i) for i in instances]
    for inst, sal, act in zip(instances, saliency.split(counts), activation.split(counts), strict=True):
        inst.saliency = sal
        inst.shape_activation = act
    return mask_head(head_input, instances)
