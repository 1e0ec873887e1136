"""The RoI mask branch shared by Mask R-CNN and RetinaMask, optionally with the ShapeProp head.

Training takes the RoIs of the detector (Mask R-CNN: the box head's sampled proposals; RetinaMask:
its detections plus the GT boxes), each labelled 0 (background) or class+1 and matched to a GT.
The mask loss covers positive RoIs whose GT has `has_mask`. With ShapeProp, the saliency learner
runs on all RoIs (MIL needs negative bags) and the shape path (propagation, prior) on the positive
RoIs only, the ones whose output is used: its reconstruction loss covers the positives with a mask,
and its prior is concatenated to the mask head's input. At inference everything runs on the
detections.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import project_masks_on_boxes
from torchvision.ops import MultiScaleRoIAlign

from shapeprop.config import ShapePropConfig


def _has_mask(target: dict[str, Any]) -> torch.Tensor:
    if "has_mask" in target:
        return target["has_mask"].bool()
    return torch.ones(len(target["boxes"]), dtype=torch.bool, device=target["boxes"].device)


class MaskBranch(nn.Module):
    """RoIAlign -> [ShapeProp] -> mask head (4 convs) -> predictor (deconv + 1x1), with its losses.

    `num_classes` counts foreground classes; the predictor has one channel per class, or one
    channel in total when `class_agnostic`. Labels given to it are 1-based (0 = background).
    `shapeprop_rois_per_image` caps the training RoIs of the ShapeProp head per image (every
    positive is kept, negatives are sampled); None runs it on all of them, as the paper does.
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
    ):
        super().__init__()
        self.num_classes = num_classes
        self.class_agnostic = class_agnostic
        self.resolution = resolution
        self.roi_pool = MultiScaleRoIAlign(featmap_names, resolution, sampling_ratio=2)
        self.shapeprop_cfg = shapeprop
        self.shapeprop_rois_per_image = shapeprop_rois_per_image
        self.shapeprop: nn.Module | None = None
        extra = 0
        if shapeprop is not None:
            from shapeprop.head import ShapePropHead

            self.shapeprop = ShapePropHead(in_channels, num_classes, shapeprop)
            extra = shapeprop.prior_channels
        self.head = MaskRCNNHeads(in_channels + extra, [head_channels] * 4, 1)
        self.predictor = MaskRCNNPredictor(head_channels, head_channels, 1 if class_agnostic else num_classes)

    def _logits(self, head_input: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mask logits [R, 2S, 2S] of each RoI's class (or of the single class-agnostic channel)."""
        logits = self.predictor(self.head(head_input))
        channel = torch.zeros_like(labels) if self.class_agnostic else labels - 1
        return logits[torch.arange(len(labels), device=logits.device), channel]

    def losses(
        self,
        features: dict[str, torch.Tensor],
        rois: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        labels: list[torch.Tensor],
        matched_idxs: list[torch.Tensor],
        targets: list[dict[str, Any]],
    ) -> dict[str, torch.Tensor]:
        """`loss_mask` (+ `loss_mil`, `loss_shape` with ShapeProp) for RoIs labelled 0 / class+1.

        Host-device synchronisations: one per image, to count its positives (the mask head's batch
        size); ShapeProp adds none (its selection, bags and targets are sized from those counts).
        """
        pos = [torch.where(lab > 0)[0] for lab in labels]
        pos_rois = [r[p] for r, p in zip(rois, pos, strict=True)]
        pos_matched = [m[p] for m, p in zip(matched_idxs, pos, strict=True)]
        pos_labels = torch.cat([lab[p] for lab, p in zip(labels, pos, strict=True)])
        pos_has_mask = torch.cat([_has_mask(t)[m] for t, m in zip(targets, pos_matched, strict=True)])
        mask_targets = self._mask_targets(targets, pos_rois, pos_matched, 2 * self.resolution)
        losses: dict[str, torch.Tensor] = {}

        if self.shapeprop is None:
            head_input = self.roi_pool(features, pos_rois, image_shapes)
        else:
            from shapeprop.mil import assign_bags_batched

            # Per image the head sees its positive RoIs first, then the negatives (all, or a sample).
            order = [self._shapeprop_rois(lab, len(p)) for lab, p in zip(labels, pos, strict=True)]
            sp_rois = [r[o] for r, o in zip(rois, order, strict=True)]
            sp_classes = torch.cat([lab[o] for lab, o in zip(labels, order, strict=True)])
            feats = self.roi_pool(features, sp_rois, image_shapes)
            starts = [0, *itertools.accumulate(len(o) for o in order)][:-1]
            pos_rows = torch.cat(
                [torch.arange(s, s + len(p), device=feats.device) for s, p in zip(starts, pos, strict=True)]
            )
            # Negatives get class 0; they feed only the MIL loss, so the shape path skips them.
            out = self.shapeprop(feats, sp_classes.clamp(min=1) - 1, shape_rois=pos_rows)
            bags = assign_bags_batched(
                sp_rois,
                [t["boxes"] for t in targets],
                [t["labels"] - 1 for t in targets],
                self.shapeprop_cfg.mil_iou_threshold,
            )
            # The S x S shape target is the 2S x 2S mask target averaged over 2 x 2 cells.
            shape_targets = F.avg_pool2d(mask_targets[:, None], 2)[:, 0]
            losses.update(self.shapeprop.losses(out, bags, shape_targets, pos_has_mask, shape_rois=pos_rows))
            head_input = torch.cat([feats[pos_rows], out.prior.to(feats.dtype)], dim=1)

        logits = self._logits(head_input, pos_labels)
        # Weighting instead of boolean indexing: no host sync, and exactly 0 (with a gradient, which
        # keeps the graph and DDP whole) when no positive RoI has a mask.
        per_roi = F.binary_cross_entropy_with_logits(logits, mask_targets, reduction="none").mean(dim=(1, 2))
        weight = pos_has_mask.to(per_roi.dtype)
        losses["loss_mask"] = (per_roi * weight).sum() / weight.sum().clamp_min(1)
        return losses

    def _shapeprop_rois(self, labels: torch.Tensor, num_pos: int) -> torch.Tensor:
        """Indices of one image's RoIs that the ShapeProp head sees: its `num_pos` positives in
        order, then its negatives: all, or a random subset so that positives + negatives <=
        `shapeprop_rois_per_image` (draws from torch's RNG). A stable sort instead of `nonzero`:
        no host sync."""
        keys = (labels == 0).float()  # positives 0, negatives 1
        keep = len(labels)
        cap = self.shapeprop_rois_per_image
        if cap is not None and keep > max(cap, num_pos):
            keep = max(cap, num_pos)
            keys = keys + keys * torch.rand(len(labels), device=labels.device)  # shuffle the negatives
        return torch.sort(keys, stable=True).indices[:keep]

    @staticmethod
    def _mask_targets(targets, rois, matched, size: int) -> torch.Tensor:
        """The matched GT masks cropped to `rois` and resized to `size` x `size`, float in [0, 1]."""
        parts = [
            project_masks_on_boxes(t["masks"], r, m, size)
            for t, r, m in zip(targets, rois, matched, strict=True)
        ]
        return torch.cat(parts) if parts else torch.zeros(0, size, size)

    def predict(
        self,
        features: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        labels: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:
        """Per image: `masks` probabilities [N,1,2S,2S] and, with ShapeProp, `saliency` and
        `shape_activation` [N,1,S,S], for detections `boxes` with 1-based `labels`."""
        feats = self.roi_pool(features, boxes, image_shapes)
        flat_labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
        extra: dict[str, torch.Tensor] = {}
        if len(feats) == 0:
            empty = feats.new_zeros((0, 1, self.resolution, self.resolution))
            extra = {"saliency": empty, "shape_activation": empty} if self.shapeprop is not None else {}
            masks = feats.new_zeros((0, 1, 2 * self.resolution, 2 * self.resolution))
            return [{"masks": masks, **extra} for _ in boxes]
        if self.shapeprop is None:
            head_input = feats
        else:
            out = self.shapeprop(feats, (flat_labels - 1).clamp(min=0))
            head_input = torch.cat([feats, out.prior.to(feats.dtype)], dim=1)
            extra = {"saliency": out.saliency, "shape_activation": out.shape_activation}
        probs = self._logits(head_input, flat_labels).sigmoid()[:, None]
        counts = [len(b) for b in boxes]
        results = [{"masks": m} for m in probs.split(counts)]
        for key, value in extra.items():
            for res, part in zip(results, value.split(counts), strict=True):
                res[key] = part
        return results
