"""Detector construction from the experiment config, and parameter counts."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from shapeprop.config import ModelConfig
from shapeprop.models.backbones import (
    RESNET_FPN_CHANNELS,
    TINY_FPN_CHANNELS,
    mask_rcnn_backbone,
    retinanet_backbone,
)
from shapeprop.models.mask_branch import MaskBranch

TINY_MASK_HEAD_CHANNELS = 64
MASK_HEAD_CHANNELS = 256


def default_mask_head_channels(model_cfg: ModelConfig) -> int:
    """The architecture's mask head width unless the config sets one."""
    if model_cfg.mask_head_channels is not None:
        return model_cfg.mask_head_channels
    return TINY_MASK_HEAD_CHANNELS if model_cfg.backbone == "tiny" else MASK_HEAD_CHANNELS


def build_detector(
    model_cfg: ModelConfig,
    num_classes: int,
    min_size: int,
    max_size: int,
    score_thresh: float = 0.05,
    detections_per_img: int = 100,
) -> nn.Module:
    """Mask R-CNN or RetinaMask (+ShapeProp) for `num_classes` foreground classes.

    The model takes images already resized to `min_size`/`max_size` by the data loader.
    With `model.framework: detectron2` the same detector is built by the detectron2 plugin.
    """
    if model_cfg.framework == "detectron2":
        from shapeprop.models.d2 import build_detectron2_detector  # lazy: detectron2 is optional

        return build_detectron2_detector(
            model_cfg, num_classes, min_size, max_size, score_thresh, detections_per_img
        )
    tiny = model_cfg.backbone == "tiny"
    if model_cfg.arch == "mask_rcnn":
        from shapeprop.models.mask_rcnn import build_mask_rcnn

        backbone = mask_rcnn_backbone(model_cfg.backbone, model_cfg.weights)
        featmaps = ["0", "1", "2", "3"]
    elif model_cfg.arch == "retinamask":
        from shapeprop.models.retinamask import build_retinamask

        backbone = retinanet_backbone(model_cfg.backbone, model_cfg.weights)
        featmaps = ["0", "1", "2"]
    else:
        raise ValueError(f"model.arch: unknown architecture {model_cfg.arch!r}")
    branch = MaskBranch(
        featmaps,
        backbone.out_channels,
        num_classes,
        head_channels=default_mask_head_channels(model_cfg),
        class_agnostic=model_cfg.class_agnostic_masks,
        shapeprop=model_cfg.shapeprop,
        shapeprop_rois_per_image=model_cfg.shapeprop_rois_per_image,
    )
    if model_cfg.mask_transfer:
        from shapeprop.models.mask_transfer import enable_mask_transfer

        if model_cfg.arch != "mask_rcnn":
            raise ValueError("model.mask_transfer (Mask^X R-CNN) needs arch 'mask_rcnn'")
    build = build_mask_rcnn if model_cfg.arch == "mask_rcnn" else build_retinamask
    model = build(backbone, num_classes, branch, min_size, max_size, tiny, score_thresh, detections_per_img)
    if model_cfg.mask_transfer:
        enable_mask_transfer(model)
    return model


def count_parameters(module: nn.Module | None) -> int:
    """Number of parameters of `module` (0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def param_counts(model: nn.Module) -> dict[str, int]:
    """`total`, `mask_head` (mask head convs + predictor, the part Table 4 widens) and `shapeprop`."""
    own_counts = getattr(model, "param_counts", None)  # the detectron2 plugin's models count their own
    if callable(own_counts):
        return own_counts()
    branch = find_mask_branch(model)
    return {
        "total": count_parameters(model),
        "mask_head": count_parameters(branch.head) + count_parameters(branch.predictor),
        "shapeprop": count_parameters(branch.shapeprop),
    }


def mask_head_params(in_channels: int, width: int, num_channels_out: int) -> int:
    """Parameters of the mask head convs + predictor at `width` (no ShapeProp input channels)."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        head = MaskRCNNHeads(in_channels, [width] * 4, 1)
        predictor = MaskRCNNPredictor(width, width, num_channels_out)
    return count_parameters(head) + count_parameters(predictor)


def widened_mask_head_channels(model_cfg: ModelConfig, num_classes: int) -> int:
    """Table 4 "more head params": the smallest mask head width whose mask head has at least as many
    parameters as the default mask head plus the ShapeProp head of `model_cfg` (which must set one)."""
    if model_cfg.shapeprop is None:
        raise ValueError("widened_mask_head_channels needs a config with model.shapeprop set")
    in_channels = TINY_FPN_CHANNELS if model_cfg.backbone == "tiny" else RESNET_FPN_CHANNELS
    width = default_mask_head_channels(model_cfg.model_copy(update={"mask_head_channels": None}))
    with torch.device("meta"):
        branch = MaskBranch(
            ["0"], in_channels, num_classes, width, model_cfg.class_agnostic_masks, model_cfg.shapeprop
        )
    target = (
        count_parameters(branch.head)
        + count_parameters(branch.predictor)
        + count_parameters(branch.shapeprop)
    )
    out = 1 if model_cfg.class_agnostic_masks else num_classes
    # The count grows with the width: double past the target, then bisect to the smallest width.
    low, high = width - 1, width
    while mask_head_params(in_channels, high, out) < target:
        low, high = high, 2 * high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if mask_head_params(in_channels, mid, out) < target else (low, mid)
    return high


def find_mask_branch(model: nn.Module) -> MaskBranch:
    """The detector's `MaskBranch`."""
    for module in model.modules():
        if isinstance(module, MaskBranch):
            return module
    raise ValueError("model has no MaskBranch")
