"""RetinaMask: torchvision's RetinaNet plus a mask branch on its detections (Fu et al., 2019).

In training, the mask branch sees the RetinaNet's current top detections (computed without
gradient, and without the inference score threshold) together with the GT boxes; a RoI with IoU
>= 0.5 to a GT is positive for that GT's class. With ShapeProp the remaining RoIs are its negative
MIL bags: without them the MIL loss would see positive bags alone, and early in training, when no
score clears the threshold, the RoIs would be the GT boxes alone. At inference the mask branch runs
on the final detections.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.ops import box_iou

from shapeprop.models.detectors import RetinaMaskRecipe
from shapeprop.models.labels import BACKGROUND
from shapeprop.models.mask_branch import MaskBranch, MasksOnBoxes
from shapeprop.models.recipes import ANCHOR_ASPECT_RATIOS, BackboneRecipe, anchor_sizes
from shapeprop.models.transform import PreResizedTransform


class RetinaMask(MasksOnBoxes, RetinaNet):
    """RetinaNet + `MaskBranch`. Labels are 1-based (the classification head has a never-trained
    channel 0 so that labels match Mask R-CNN's); `forward` takes `original_sizes` like `MaskRCNN`."""

    def __init__(
        self,
        backbone,
        num_classes: int,
        mask_branch: MaskBranch,
        min_size: int,
        max_size: int,
        recipe: RetinaMaskRecipe,
        sizes: BackboneRecipe,
        score_thresh: float = 0.05,
        detections_per_img: int = 100,
    ):
        anchor_list = anchor_sizes(min_size, recipe.top_block, recipe.anchor_scales_per_octave)
        anchors = AnchorGenerator(
            tuple(tuple(s) for s in anchor_list), (ANCHOR_ASPECT_RATIOS,) * len(anchor_list)
        )
        super().__init__(
            backbone,
            num_classes + 1,
            anchor_generator=anchors,
            score_thresh=score_thresh,
            nms_thresh=recipe.nms_thresh,
            detections_per_img=detections_per_img,
            fg_iou_thresh=recipe.fg_iou_thresh,
            bg_iou_thresh=recipe.bg_iou_thresh,
            topk_candidates=sizes.retinanet_topk_candidates,
        )
        self.transform = PreResizedTransform(min_size, max_size)
        self.mask_branch = mask_branch
        self.mask_train_rois = recipe.mask_train_rois
        self.mask_fg_iou = recipe.mask_fg_iou

    def _detect(
        self, head_outputs, anchors, features, image_sizes, limit: int, score_thresh: float
    ) -> list[dict[str, torch.Tensor]]:
        per_level = [x.size(2) * x.size(3) for x in features]
        a = head_outputs["cls_logits"].size(1) // sum(per_level)
        per_level = [hw * a for hw in per_level]
        split = {k: list(v.split(per_level, dim=1)) for k, v in head_outputs.items()}
        split_anchors = [list(x.split(per_level)) for x in anchors]
        saved = self.detections_per_img, self.score_thresh
        self.detections_per_img, self.score_thresh = limit, score_thresh
        try:
            dets = self.postprocess_detections(split, split_anchors, image_sizes)
        finally:
            self.detections_per_img, self.score_thresh = saved
        return [{k: v[d["labels"] > BACKGROUND] for k, v in d.items()} for d in dets]

    def _mask_rois(self, dets, targets):
        rois, labels, matched = [], [], []
        for det, target in zip(dets, targets, strict=True):
            gt = target["boxes"]
            boxes = torch.cat([det["boxes"], gt])
            if len(gt):
                iou, idx = box_iou(boxes, gt).max(dim=1)
                background = torch.full_like(idx, BACKGROUND)
                lab = torch.where(iou >= self.mask_fg_iou, target["labels"][idx], background)
            else:
                idx = torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
                lab = idx.clone()
            rois.append(boxes)
            labels.append(lab)
            matched.append(idx)
        return rois, labels, matched

    def forward(
        self,
        images: list[torch.Tensor],
        targets: list[dict[str, Any]] | None = None,
        original_sizes: list[tuple[int, int]] | None = None,
    ):
        sizes = original_sizes or [tuple(img.shape[-2:]) for img in images]
        image_list, targets = self.transform(images, targets)
        feature_dict = self.backbone(image_list.tensors)
        features = list(feature_dict.values())
        head_outputs = self.head(features)
        anchors = self.anchor_generator(image_list, features)
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training")
            raw = self.compute_loss(targets, head_outputs, anchors)
            losses = {"loss_classifier": raw["classification"], "loss_box_reg": raw["bbox_regression"]}
            with torch.no_grad():
                detached = {k: v.detach() for k, v in head_outputs.items()}
                dets = self._detect(
                    detached, anchors, features, image_list.image_sizes, self.mask_train_rois, 0.0
                )
            rois, labels, matched = self._mask_rois(dets, targets)
            losses.update(
                self.mask_branch.losses(feature_dict, rois, image_list.image_sizes, labels, matched, targets)
            )
            return losses
        dets = self._detect(
            head_outputs,
            anchors,
            features,
            image_list.image_sizes,
            self.detections_per_img,
            self.score_thresh,
        )
        masks = self.mask_branch.predict(
            feature_dict, [d["boxes"] for d in dets], [d["labels"] for d in dets], image_list.image_sizes
        )
        dets = [d | m for d, m in zip(dets, masks, strict=True)]
        return self.transform.postprocess(dets, image_list.image_sizes, sizes)


def build_retinamask(
    backbone,
    num_classes: int,
    mask_branch: MaskBranch,
    min_size: int,
    max_size: int,
    recipe: RetinaMaskRecipe,
    sizes: BackboneRecipe,
    score_thresh: float = 0.05,
    detections_per_img: int = 100,
) -> RetinaMask:
    """RetinaMask over an FPN `backbone` with P3-P7 (keys '0', '1', '2', 'p6', 'p7')."""
    return RetinaMask(
        backbone,
        num_classes,
        mask_branch,
        min_size,
        max_size,
        recipe,
        sizes,
        score_thresh,
        detections_per_img,
    )
