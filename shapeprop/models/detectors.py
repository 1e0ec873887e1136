"""Detectors (`model.arch`): the `DETECTORS` registry, each architecture's recipe written once.

A `Detector` holds its recipe, a frozen dataclass of plain values (IoU thresholds, sampling
fractions, NMS, poolers, ...), and two builders that both read it: `torchvision` builds the model,
`detectron2` sets the detectron2 config keys of the architecture. The sizes that depend on the
backbone (proposals, sampled RoIs, head widths) are the backbone's (`shapeprop.models.recipes`).

Adding a detector is one `DETECTORS.register` call (plus its builders); `model.arch` accepts every
registered name. This module imports neither torch nor detectron2: the built-in builders are
imported when called (`Lazy`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shapeprop.models.recipes import TOP_BLOCKS, Lazy
from shapeprop.registry import Registry


@dataclass(frozen=True)
class DetectorRecipe:
    """What every detector's recipe has: the FPN it runs on and its RoI poolers.

    torchvision and detectron2 names of each value are in the comments (detectron2 keys under MODEL).
    """

    top_block: str  # the FPN's levels: a key of recipes.TOP_BLOCKS (TORCHVISION_FPN.TOP_BLOCK)
    roi_levels: int  # FPN levels, finest first, the RoI heads pool from (ROI_HEADS / RETINAMASK IN_FEATURES)
    mask_pooler_resolution: int  # MaskBranch resolution (ROI_MASK_HEAD.POOLER_RESOLUTION)
    pooler_sampling_ratio: int  # MultiScaleRoIAlign sampling_ratio (ROI_*_HEAD.POOLER_SAMPLING_RATIO)
    anchor_scales_per_octave: int  # anchor sizes per level (recipes.anchor_sizes)

    def roi_featmaps(self) -> list[str]:
        """The pooled FPN levels as torchvision names them ("0", "1", ...)."""
        return [str(i) for i in range(self.roi_levels)]

    def roi_in_features(self) -> list[str]:
        """The pooled FPN levels as detectron2 names them ("p2", ...)."""
        return [name for name, _ in TOP_BLOCKS[self.top_block].levels[: self.roi_levels]]


@dataclass(frozen=True)
class MaskRCNNRecipe(DetectorRecipe):
    rpn_fg_iou_thresh: float  # anchors at or above: foreground (RPN.IOU_THRESHOLDS[1])
    rpn_bg_iou_thresh: float  # anchors below: background; between: ignored (RPN.IOU_THRESHOLDS[0])
    rpn_positive_fraction: float  # RPN.POSITIVE_FRACTION
    rpn_nms_thresh: float  # RPN.NMS_THRESH
    box_fg_iou_thresh: float  # RoIs at or above: foreground (ROI_HEADS.IOU_THRESHOLDS[-1])
    box_bg_iou_thresh: float  # RoIs below: background (ROI_HEADS.IOU_THRESHOLDS[0])
    box_positive_fraction: float  # ROI_HEADS.POSITIVE_FRACTION
    box_nms_thresh: float  # test-time NMS per class (ROI_HEADS.NMS_THRESH_TEST)
    box_pooler_resolution: int  # ROI_BOX_HEAD.POOLER_RESOLUTION


@dataclass(frozen=True)
class RetinaMaskRecipe(DetectorRecipe):
    fg_iou_thresh: float  # anchors at or above: foreground (RETINANET.IOU_THRESHOLDS[1])
    bg_iou_thresh: float  # anchors below: background; between: ignored (RETINANET.IOU_THRESHOLDS[0])
    nms_thresh: float  # test-time NMS (RETINANET.NMS_THRESH_TEST)
    mask_train_rois: int  # top detections per image the mask branch trains on (RETINAMASK.MASK_TRAIN_ROIS)
    mask_fg_iou: float  # IoU with a GT box that makes such a RoI positive (RETINAMASK.MASK_FG_IOU)


@dataclass(frozen=True)
class Detector:
    """A `DETECTORS` entry.

    `torchvision(backbone, num_classes, mask_branch, min_size, max_size, recipe, sizes, score_thresh,
    detections_per_img)` returns the model over the torchvision FPN `backbone` (the `recipe.top_block`
    one), with the `MaskBranch` on `recipe.roi_featmaps()`; `sizes` is the backbone's
    `BackboneRecipe` with `model.sizes` applied.
    `detectron2(cfg, recipe, sizes, num_classes, score_thresh)` sets the architecture's keys of a
    detectron2 config that has the plugin's keys and the settings every detector shares.
    """

    recipe: DetectorRecipe
    torchvision: Callable[..., Any]
    detectron2: Callable[..., None]
    description: str = ""
    mask_transfer: bool = False  # Mask^X R-CNN's weight transfer applies (a box predictor to transfer from)


DETECTORS: Registry[Detector] = Registry("detector")

MASK_RCNN = MaskRCNNRecipe(
    top_block="maxpool",
    roi_levels=4,
    mask_pooler_resolution=14,
    pooler_sampling_ratio=2,
    anchor_scales_per_octave=1,
    rpn_fg_iou_thresh=0.7,
    rpn_bg_iou_thresh=0.3,
    rpn_positive_fraction=0.5,
    rpn_nms_thresh=0.7,
    box_fg_iou_thresh=0.5,
    box_bg_iou_thresh=0.5,
    box_positive_fraction=0.25,
    box_nms_thresh=0.5,
    box_pooler_resolution=7,
)

# RetinaMask (Fu et al., 2019): RetinaNet's matching and NMS; the mask branch trains on the top 64
# detections per image, positive at IoU 0.5.
RETINAMASK = RetinaMaskRecipe(
    top_block="p6p7",
    roi_levels=3,
    mask_pooler_resolution=14,
    pooler_sampling_ratio=2,
    anchor_scales_per_octave=3,
    fg_iou_thresh=0.5,
    bg_iou_thresh=0.4,
    nms_thresh=0.5,
    mask_train_rois=64,
    mask_fg_iou=0.5,
)

DETECTORS.register(
    "mask_rcnn",
    Detector(
        MASK_RCNN,
        Lazy("shapeprop.models.mask_rcnn:build_mask_rcnn"),
        Lazy("shapeprop.models.d2.config:mask_rcnn_config"),
        "Mask R-CNN with FPN",
        mask_transfer=True,
    ),
)
DETECTORS.register(
    "retinamask",
    Detector(
        RETINAMASK,
        Lazy("shapeprop.models.retinamask:build_retinamask"),
        Lazy("shapeprop.models.d2.config:retinamask_config"),
        "RetinaMask: RetinaNet with a mask branch on its detections",
    ),
)
