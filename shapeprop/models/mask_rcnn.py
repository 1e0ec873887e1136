"""Mask R-CNN with FPN on torchvision's detection modules, with the semi-supervised mask branch.

torchvision's RPN, box RoI head and samplers are used as they are; only the mask part of the RoI
heads is replaced by `MaskBranch` (has_mask filtering, class-agnostic masks, ShapeProp).
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

from shapeprop.models.detectors import MaskRCNNRecipe
from shapeprop.models.mask_branch import MaskBranch, MasksOnBoxes
from shapeprop.models.recipes import ANCHOR_ASPECT_RATIOS, BackboneRecipe, anchor_sizes
from shapeprop.models.transform import PreResizedTransform
from shapeprop.ops.roi_align import MultiScaleRoIAlign


class SemiRoIHeads(RoIHeads):
    """torchvision's box RoI head followed by a `MaskBranch` instead of torchvision's mask head."""

    def __init__(self, mask_branch: MaskBranch, **box_kwargs: Any):
        super().__init__(**box_kwargs)
        self.mask_branch = mask_branch

    def forward(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Any]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(
                class_logits, box_regression, labels, regression_targets
            )
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            losses.update(
                self.mask_branch.losses(features, proposals, image_shapes, labels, matched_idxs, targets)
            )
            return [], losses
        boxes, scores, labels = self.postprocess_detections(
            class_logits, box_regression, proposals, image_shapes
        )
        masks = self.mask_branch.predict(features, boxes, labels, image_shapes)
        results = [
            {"boxes": b, "labels": lab, "scores": s, **m}
            for b, lab, s, m in zip(boxes, labels, scores, masks, strict=True)
        ]
        return results, {}


class MaskRCNN(MasksOnBoxes, GeneralizedRCNN):
    """Mask R-CNN whose `forward` also takes the sizes to map detections back to (the original
    image sizes; default: the input sizes). Outputs: boxes, labels (1-based), scores, masks
    [N,1,H,W] probabilities, and with ShapeProp `saliency` / `shape_activation` RoI maps."""

    @property
    def mask_branch(self) -> MaskBranch:
        return self.roi_heads.mask_branch

    def forward(
        self,
        images: list[torch.Tensor],
        targets: list[dict[str, Any]] | None = None,
        original_sizes: list[tuple[int, int]] | None = None,
    ):
        sizes = original_sizes or [tuple(img.shape[-2:]) for img in images]
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        proposals, proposal_losses = self.rpn(image_list, features, targets)
        detections, detector_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        if self.training:
            return {**proposal_losses, **detector_losses}
        return self.transform.postprocess(detections, image_list.image_sizes, sizes)


def build_mask_rcnn(
    backbone,
    num_classes: int,
    mask_branch: MaskBranch,
    min_size: int,
    max_size: int,
    recipe: MaskRCNNRecipe,
    sizes: BackboneRecipe,
    score_thresh: float = 0.05,
    detections_per_img: int = 100,
) -> MaskRCNN:
    """Mask R-CNN over an FPN `backbone` (keys '0'..'3', 'pool'); `num_classes` foreground classes.

    The detector's `recipe` gives the matching, sampling, NMS and pooling settings; the backbone's
    `sizes` the RPN and box-head sizes (the tiny one's are CPU-sized: fewer proposals and sampled
    RoIs, a 256-d box head).
    """
    channels = backbone.out_channels
    anchor_list = anchor_sizes(min_size, recipe.top_block, recipe.anchor_scales_per_octave)
    anchors = AnchorGenerator(
        tuple(tuple(s) for s in anchor_list), (ANCHOR_ASPECT_RATIOS,) * len(anchor_list)
    )
    pre_nms, post_nms = sizes.rpn_pre_nms_top_n, sizes.rpn_post_nms_top_n
    rep, res = sizes.box_head_channels, recipe.box_pooler_resolution
    rpn = RegionProposalNetwork(
        anchors,
        RPNHead(channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=recipe.rpn_fg_iou_thresh,
        bg_iou_thresh=recipe.rpn_bg_iou_thresh,
        batch_size_per_image=sizes.rpn_batch_size_per_image,
        positive_fraction=recipe.rpn_positive_fraction,
        pre_nms_top_n={"training": pre_nms[0], "testing": pre_nms[1]},
        post_nms_top_n={"training": post_nms[0], "testing": post_nms[1]},
        nms_thresh=recipe.rpn_nms_thresh,
    )
    box_pool = MultiScaleRoIAlign(recipe.roi_featmaps(), res, sampling_ratio=recipe.pooler_sampling_ratio)
    roi_heads = SemiRoIHeads(
        mask_branch,
        box_roi_pool=box_pool,
        box_head=TwoMLPHead(channels * res * res, rep),
        box_predictor=FastRCNNPredictor(rep, num_classes + 1),
        fg_iou_thresh=recipe.box_fg_iou_thresh,
        bg_iou_thresh=recipe.box_bg_iou_thresh,
        batch_size_per_image=sizes.box_batch_size_per_image,
        positive_fraction=recipe.box_positive_fraction,
        bbox_reg_weights=None,
        score_thresh=score_thresh,
        nms_thresh=recipe.box_nms_thresh,
        detections_per_img=detections_per_img,
    )
    return MaskRCNN(backbone, rpn, roi_heads, PreResizedTransform(min_size, max_size))
