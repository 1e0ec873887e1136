"""The RoI mask branch with the ShapeProp head: one framework-neutral core and torchvision's module.

Training takes the RoIs of the detector (Mask R-CNN: the box head's sampled proposals; RetinaMask:
its detections plus the GT boxes), each with a label (0 = background, c + 1 = class c; see
`shapeprop.models.labels`) and matched to a GT.
The mask loss covers positive RoIs whose GT has `has_mask`. With ShapeProp, the saliency learner
runs on all RoIs (MIL needs negative bags) and the shape path (propagation, prior) on the positive
RoIs only, the ones whose output is used: its reconstruction loss covers the positives with a mask,
and its prior is concatenated to the mask head's input. At inference everything runs on the
detections.

`mask_branch_losses` and `mask_branch_predict` are that logic for any framework: the caller gives
a pooling function (per-image XYXY boxes -> RoI features) and its mask head (RoI features -> mask
logits). `MaskBranch` is the torchvision detectors' module around them; the detectron2 plugin
(`shapeprop.models.d2.mask`) calls them with detectron2's pooler and mask head.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import project_masks_on_boxes

from shapeprop.config import ShapePropConfig
from shapeprop.head import ShapePropHead
from shapeprop.mil import assign_bags_batched
from shapeprop.models.labels import BACKGROUND, head_classes, label_to_class
from shapeprop.models.params import MASK_HEAD_CONVS
from shapeprop.ops.roi_align import MultiScaleRoIAlign

Pool = Callable[[list[torch.Tensor]], torch.Tensor]  # per-image XYXY boxes -> [R, C, S, S]
MaskLogits = Callable[[torch.Tensor], torch.Tensor]  # [R, C', S, S] -> [R, K or 1, 2S, 2S]


def _has_mask(target: dict[str, Any]) -> torch.Tensor:
    if "has_mask" in target:
        return target["has_mask"].bool()
    return torch.ones(len(target["boxes"]), dtype=torch.bool, device=target["boxes"].device)


def mask_targets(masks: Any, rois: torch.Tensor, matched: torch.Tensor, size: int) -> torch.Tensor:
    """The matched GT masks cropped to `rois` and resized to `size` x `size`, float in [0, 1].

    `masks` are full-image bitmaps [G, H, W] (RoIAlign, as torchvision's Mask R-CNN), or any mask
    structure whose indexing and `crop_and_resize(boxes, size)` do it (detectron2's PolygonMasks).
    """
    if isinstance(masks, torch.Tensor):
        return project_masks_on_boxes(masks, rois, matched, size)
    return masks[matched].crop_and_resize(rois, size).to(rois.dtype)


def _select_class(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each RoI's map [R, 2S, 2S]: the channel of its 1-based label, or the only one (class-agnostic)."""
    channel = torch.zeros_like(labels) if logits.shape[1] == 1 else label_to_class(labels)
    return logits[torch.arange(len(labels), device=logits.device), channel]


def shapeprop_rois(labels: torch.Tensor, num_pos: int, cap: int | None) -> torch.Tensor:
    """Indices of one image's RoIs that the ShapeProp head sees: its `num_pos` positives in order,
    then its negatives: all, or a random subset so that positives + negatives <= `cap` (draws from
    torch's RNG). A stable sort instead of `nonzero`: no host sync."""
    keys = (labels == BACKGROUND).float()  # positives 0, negatives 1
    keep = len(labels)
    if cap is not None and keep > max(cap, num_pos):
        keep = max(cap, num_pos)
        keys = keys + keys * torch.rand(len(labels), device=labels.device)  # shuffle the negatives
    return torch.sort(keys, stable=True).indices[:keep]


def mask_branch_losses(
    pool: Pool,
    mask_logits: MaskLogits,
    rois: list[torch.Tensor],
    labels: list[torch.Tensor],
    matched_idxs: list[torch.Tensor],
    targets: list[dict[str, Any]],
    shapeprop: ShapePropHead | None = None,
    shapeprop_rois_per_image: int | None = None,
) -> dict[str, torch.Tensor]:
    """`loss_mask` (+ `loss_mil`, `loss_shape` with ShapeProp) for each image's RoIs `rois` [R, 4]
    labelled `labels` (0 / class+1) and matched to GT `matched_idxs`.

    `targets` are per image `boxes` [G, 4], 1-based `labels` [G], `masks` (see `mask_targets`) and
    optionally `has_mask` [G]. Host-device synchronisations: one per image, to count its positives
    (the mask head's batch size); ShapeProp adds none.
    """
    pos = [torch.where(lab > BACKGROUND)[0] for lab in labels]
    pos_rois = [r[p] for r, p in zip(rois, pos, strict=True)]
    pos_matched = [m[p] for m, p in zip(matched_idxs, pos, strict=True)]
    pos_labels = torch.cat([lab[p] for lab, p in zip(labels, pos, strict=True)])
    pos_has_mask = torch.cat([_has_mask(t)[m] for t, m in zip(targets, pos_matched, strict=True)])
    losses: dict[str, torch.Tensor] = {}

    if shapeprop is None:
        head_input = pool(pos_rois)
        size = 2 * head_input.shape[-1]
        targets_2s = _cat_targets(targets, pos_rois, pos_matched, size, head_input)
    else:
        # Per image the head sees its positive RoIs first, then the negatives (all, or a sample).
        order = [
            shapeprop_rois(lab, len(p), shapeprop_rois_per_image) for lab, p in zip(labels, pos, strict=True)
        ]
        sp_rois = [r[o] for r, o in zip(rois, order, strict=True)]
        sp_classes = torch.cat([lab[o] for lab, o in zip(labels, order, strict=True)])
        feats = pool(sp_rois)
        size = 2 * feats.shape[-1]
        targets_2s = _cat_targets(targets, pos_rois, pos_matched, size, feats)
        starts = [0, *itertools.accumulate(len(o) for o in order)][:-1]
        pos_rows = torch.cat(
            [torch.arange(s, s + len(p), device=feats.device) for s, p in zip(starts, pos, strict=True)]
        )
        # Negatives get class 0; they feed only the MIL loss, so the shape path skips them.
        out = shapeprop(feats, head_classes(sp_classes), shape_rois=pos_rows)
        bags = assign_bags_batched(
            sp_rois,
            [t["boxes"] for t in targets],
            [label_to_class(t["labels"]) for t in targets],
            shapeprop.cfg.mil_iou_threshold,
        )
        # The S x S shape target is the 2S x 2S mask target averaged over 2 x 2 cells.
        shape_targets = F.avg_pool2d(targets_2s[:, None], 2)[:, 0]
        losses.update(shapeprop.losses(out, bags, shape_targets, pos_has_mask, shape_rois=pos_rows))
        head_input = ShapePropHead.fuse(feats[pos_rows], out)

    logits = _select_class(mask_logits(head_input), pos_labels)
    # Weighting instead of boolean indexing: no host sync, and exactly 0 (with a gradient, which
    # keeps the graph and DDP whole) when no positive RoI has a mask.
    per_roi = F.binary_cross_entropy_with_logits(logits, targets_2s, reduction="none").mean(dim=(1, 2))
    weight = pos_has_mask.to(per_roi.dtype)
    losses["loss_mask"] = (per_roi * weight).sum() / weight.sum().clamp_min(1)
    return losses


def _cat_targets(targets, rois, matched, size: int, like: torch.Tensor) -> torch.Tensor:
    # In the features' dtype: detectron2's boxes are always float32, its features need not be.
    parts = [
        mask_targets(t["masks"], r.to(like.dtype), m, size)
        for t, r, m in zip(targets, rois, matched, strict=True)
    ]
    return torch.cat(parts).to(like.dtype)  # a batch has at least one image


def mask_branch_predict(
    pool: Pool,
    mask_logits: MaskLogits,
    boxes: list[torch.Tensor],
    labels: list[torch.Tensor],
    shapeprop: ShapePropHead | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Per image: `masks` probabilities [N,1,2S,2S] and, with ShapeProp, `saliency` and
    `shape_activation` [N,1,S,S], for detections `boxes` with 1-based `labels`."""
    feats = pool(boxes)
    res = feats.shape[-1]
    if len(feats) == 0:
        empty = feats.new_zeros((0, 1, res, res))
        extra = {"saliency": empty, "shape_activation": empty} if shapeprop is not None else {}
        return [{"masks": feats.new_zeros((0, 1, 2 * res, 2 * res)), **extra} for _ in boxes]
    flat_labels = torch.cat(labels)
    extra: dict[str, torch.Tensor] = {}
    head_input = feats
    if shapeprop is not None:
        out = shapeprop(feats, head_classes(flat_labels))
        head_input = ShapePropHead.fuse(feats, out)
        extra = {"saliency": out.saliency, "shape_activation": out.shape_activation}
    probs = _select_class(mask_logits(head_input), flat_labels).sigmoid()[:, None]
    counts = [len(b) for b in boxes]
    results = [{"masks": m} for m in probs.split(counts)]
    for key, value in extra.items():
        for result, part in zip(results, value.split(counts), strict=True):
            result[key] = part
    return results


class MaskBranch(nn.Module):
    """torchvision's mask branch: RoIAlign -> [ShapeProp] -> mask head (4 convs) -> predictor
    (deconv + 1x1), with its losses (`mask_branch_losses`).

    `num_classes` counts foreground classes; the predictor has one channel per class, or one
    channel in total when `class_agnostic`. Labels given to it are 1-based (0 = background).
    `shapeprop_rois_per_image` caps the training RoIs of the ShapeProp head per image (every
    positive is kept, negatives are sampled); None runs it on all of them, as the paper does.
    `channels_last` runs the ShapeProp head in channels-last memory format (`ShapePropHead`).
    """

    def __init__(
        self,
        featmap_names: list[str],
        in_channels: int,
        num_classes: int,
        head_channels: int = 256,
        class_agnostic: bool = False,
        shapeprop: ShapePropConfig | None = None,
        resolution: int = 14,
        shapeprop_rois_per_image: int | None = None,
        sampling_ratio: int = 2,
        channels_last: bool = False,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.class_agnostic = class_agnostic
        self.resolution = resolution
        self.roi_pool = MultiScaleRoIAlign(featmap_names, resolution, sampling_ratio=sampling_ratio)
        self.shapeprop_rois_per_image = shapeprop_rois_per_image
        self.shapeprop = (
            ShapePropHead(in_channels, num_classes, shapeprop, channels_last=channels_last)
            if shapeprop is not None
            else None
        )
        extra = shapeprop.prior_channels if shapeprop is not None else 0
        self.head = MaskRCNNHeads(in_channels + extra, [head_channels] * MASK_HEAD_CONVS, 1)
        self.predictor = MaskRCNNPredictor(head_channels, head_channels, 1 if class_agnostic else num_classes)

    def mask_logits(self, head_input: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.head(head_input))

    def losses(
        self,
        features: dict[str, torch.Tensor],
        rois: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        labels: list[torch.Tensor],
        matched_idxs: list[torch.Tensor],
        targets: list[dict[str, Any]],
    ) -> dict[str, torch.Tensor]:
        """`loss_mask` (+ `loss_mil`, `loss_shape` with ShapeProp) for RoIs labelled 0 / class+1."""
        return mask_branch_losses(
            lambda boxes: self.roi_pool(features, boxes, image_shapes),
            self.mask_logits,
            rois,
            labels,
            matched_idxs,
            targets,
            self.shapeprop,
            self.shapeprop_rois_per_image,
        )

    def predict(
        self,
        features: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        labels: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:
        """See `mask_branch_predict`."""
        return mask_branch_predict(
            lambda b: self.roi_pool(features, b, image_shapes),
            self.mask_logits,
            boxes,
            labels,
            self.shapeprop,
        )


class MasksOnBoxes:
    """Mixin of the torchvision detectors (`transform`, `backbone`, `mask_branch`): the mask branch
    run on boxes given from outside, e.g. the ground truth (`shapeprop.eval.gt_boxes`)."""

    mask_branch: MaskBranch

    def masks_on_boxes(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mask probabilities [N, 1, 2S, 2S] for XYXY `boxes` (input-image pixels) of 1-based `labels`."""
        image_list, _ = self.transform([image])
        features = self.backbone(image_list.tensors)
        return self.mask_branch.predict(features, [boxes], [labels], image_list.image_sizes)[0]["masks"]


def find_mask_branch(model: nn.Module) -> MaskBranch:
    """The torchvision detector's `MaskBranch`."""
    for module in model.modules():
        if isinstance(module, MaskBranch):
            return module
    raise ValueError("model has no MaskBranch")
