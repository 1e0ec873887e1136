"""Detector construction from the experiment config: the dispatch to the detector builders.

Where the rest lives: sizes per backbone in `shapeprop.models.recipes`, parameter counts (also in
closed form, torch-free) in `shapeprop.models.params`, the mask branch in
`shapeprop.models.mask_branch`. No module of `shapeprop.models` imports this one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from shapeprop.config import ExperimentConfig, ModelConfig
from shapeprop.models.backbones import mask_rcnn_backbone, retinanet_backbone
from shapeprop.models.mask_branch import MaskBranch
from shapeprop.models.mask_rcnn import build_mask_rcnn
from shapeprop.models.mask_transfer import enable_mask_transfer
from shapeprop.models.recipes import default_mask_head_channels, recipe_of
from shapeprop.models.retinamask import build_retinamask

# per architecture: the FPN backbone, the feature maps the mask branch pools, the detector builder
ARCHITECTURES = {
    "mask_rcnn": (mask_rcnn_backbone, ["0", "1", "2", "3"], build_mask_rcnn),
    "retinamask": (retinanet_backbone, ["0", "1", "2"], build_retinamask),
}


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
        # lazy: detectron2 is optional, and importing the plugin imports it
        from shapeprop.models.d2 import build_detectron2_detector

        return build_detectron2_detector(
            model_cfg, num_classes, min_size, max_size, score_thresh, detections_per_img
        )
    if model_cfg.arch not in ARCHITECTURES:
        raise ValueError(f"model.arch: unknown architecture {model_cfg.arch!r}")
    make_backbone, featmaps, build = ARCHITECTURES[model_cfg.arch]
    backbone = make_backbone(model_cfg.backbone, model_cfg.weights)
    branch = MaskBranch(
        featmaps,
        backbone.out_channels,
        num_classes,
        head_channels=default_mask_head_channels(model_cfg),
        class_agnostic=model_cfg.class_agnostic_masks,
        shapeprop=model_cfg.shapeprop,
        shapeprop_rois_per_image=model_cfg.shapeprop_rois_per_image,
    )
    if model_cfg.mask_transfer and model_cfg.arch != "mask_rcnn":
        raise ValueError("model.mask_transfer (Mask^X R-CNN) needs arch 'mask_rcnn'")
    model = build(
        backbone,
        num_classes,
        branch,
        min_size,
        max_size,
        recipe_of(model_cfg),
        score_thresh,
        detections_per_img,
    )
    if model_cfg.mask_transfer:
        enable_mask_transfer(model)
    return model


def load_detector(
    cfg: ExperimentConfig,
    num_classes: int,
    weights: str | Path,
    score_thresh: float | None = None,
    detections_per_img: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A trained run's detector: built from its config (score threshold and detections per image
    of its evaluation unless given) with the weights of `weights` (a checkpoint of
    `train_detector`, or the weights-only file of `write_model_weights`), in eval mode on the CPU.
    Returns it and the loaded checkpoint dict (`global_step`, `shapeprop_identity`)."""
    from shapeprop.engine.train import load_model_weights  # lazy: Lightning, for trained models only

    model = build_detector(
        cfg.model,
        num_classes,
        cfg.data.min_size,
        cfg.data.max_size,
        cfg.eval.score_threshold if score_thresh is None else score_thresh,
        cfg.eval.detections_per_image if detections_per_img is None else detections_per_img,
    )
    ckpt = load_model_weights(model, Path(weights))
    return model.eval(), ckpt
