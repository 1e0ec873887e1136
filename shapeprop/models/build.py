"""Detector construction from the experiment config: the dispatch through `DETECTORS`.

Where the rest lives: each architecture's recipe and builders in `shapeprop.models.detectors`,
sizes per backbone in `shapeprop.models.recipes`, parameter counts (also in closed form,
torch-free) in `shapeprop.models.params`, the mask branch in `shapeprop.models.mask_branch`.
No module of `shapeprop.models` imports this one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from shapeprop.config import ExperimentConfig, ModelConfig
from shapeprop.models.backbones import fpn_backbone
from shapeprop.models.compile import compile_fixed_shape_parts
from shapeprop.models.detectors import DETECTORS
from shapeprop.models.mask_branch import MaskBranch
from shapeprop.models.mask_transfer import enable_mask_transfer


def build_detector(
    model_cfg: ModelConfig,
    num_classes: int,
    min_size: int,
    max_size: int,
    score_thresh: float = 0.05,
    detections_per_img: int = 100,
) -> nn.Module:
    """The registered detector `model.arch` (+ShapeProp) for `num_classes` foreground classes.

    The model takes images already resized to `min_size`/`max_size` by the data loader.
    With `model.framework: detectron2` the same detector is built by the detectron2 plugin.
    """
    if model_cfg.framework == "detectron2":
        # lazy: detectron2 is optional, and importing the plugin imports it
        from shapeprop.models.d2 import build_detectron2_detector

        return build_detectron2_detector(
            model_cfg, num_classes, min_size, max_size, score_thresh, detections_per_img
        )
    detector = DETECTORS.get(model_cfg.arch)
    if model_cfg.mask_transfer and not detector.mask_transfer:
        raise ValueError(f"model.mask_transfer (Mask^X R-CNN) does not apply to arch '{model_cfg.arch}'")
    recipe = detector.recipe
    backbone = fpn_backbone(model_cfg.backbone, model_cfg.weights, recipe.top_block)
    branch = MaskBranch(
        recipe.roi_featmaps(),
        backbone.out_channels,
        num_classes,
        head_channels=model_cfg.mask_head_width(),
        class_agnostic=model_cfg.class_agnostic_masks,
        shapeprop=model_cfg.shapeprop,
        resolution=recipe.mask_pooler_resolution,
        sampling_ratio=recipe.pooler_sampling_ratio,
        shapeprop_rois_per_image=model_cfg.shapeprop_rois_per_image,
        channels_last=model_cfg.channels_last,
    )
    model = detector.torchvision(
        backbone,
        num_classes,
        branch,
        min_size,
        max_size,
        recipe,
        model_cfg.backbone_recipe(),
        score_thresh,
        detections_per_img,
    )
    if model_cfg.mask_transfer:
        enable_mask_transfer(model)
    if model_cfg.compile != "none":
        compile_fixed_shape_parts(model, model_cfg.compile)
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
