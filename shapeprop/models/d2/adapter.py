"""The harness side: a detectron2 model behind the torchvision-style interface of the engine.

`build_detectron2_detector` takes the same arguments as `shapeprop.models.build.build_detector` and
returns a `Detectron2Detector`, which the Lightning engine trains and `shapeprop.eval.inference.predict`
evaluates exactly like the torchvision detectors: the same loader items in, the same loss names and
the same detection dicts out.
"""

from __future__ import annotations

from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage
from torch import nn

from shapeprop.config import ModelConfig
from shapeprop.models.d2.config import config_from_model_config
from shapeprop.models.d2.mask import mask_inference
from shapeprop.models.labels import class_to_label, label_to_class
from shapeprop.models.params import count_parameters

# detectron2 loss names -> the torchvision path's, so runs of both frameworks log the same metrics
LOSS_NAMES = {
    "loss_cls": "loss_classifier",
    "loss_rpn_cls": "loss_objectness",
    "loss_rpn_loc": "loss_rpn_box_reg",
}


def target_to_instances(target: dict[str, Any], image_size: tuple[int, int]) -> Instances:
    """A loader target (XYXY `boxes`, 1-based `labels`, full-image `masks`, `has_mask`) as detectron2
    `Instances` (`gt_boxes`, 0-based `gt_classes`, `gt_masks`, `gt_has_mask`)."""
    boxes = target["boxes"]
    has_mask = target.get("has_mask")
    if has_mask is None:
        has_mask = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    return Instances(
        image_size,
        gt_boxes=Boxes(boxes),
        gt_classes=label_to_class(target["labels"]),
        gt_masks=BitMasks(target["masks"].bool()),
        gt_has_mask=has_mask.bool(),
    )


def instances_to_detections(instances: Instances) -> dict[str, torch.Tensor]:
    """detectron2 detections as the torchvision path's dict: `boxes`, `scores`, 1-based `labels`,
    `masks` [N, 1, H, W] (0/1), and `saliency` / `shape_activation` RoI maps when present."""
    out = {
        "boxes": instances.pred_boxes.tensor,
        "scores": instances.scores,
        "labels": class_to_label(instances.pred_classes),
    }
    if instances.has("pred_masks"):
        out["masks"] = instances.pred_masks[:, None].to(out["boxes"].dtype)
    for key in ("saliency", "shape_activation"):
        if instances.has(key):
            out[key] = instances.get(key)
    return out


class Detectron2Detector(nn.Module):
    """Wraps a detectron2 meta-architecture (`self.model`) for the engine and the evaluation.

    `forward(images, targets=None, original_sizes=None)`: `images` are float RGB [3, H, W] in [0, 1]
    as the loader gives them; in training returns the loss dict (detectron2's names mapped to the
    torchvision path's), otherwise one detection dict per image in `original_sizes` coordinates.
    """

    def __init__(self, model: nn.Module, cfg: CfgNode):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.bgr = cfg.INPUT.FORMAT == "BGR"
        self._iter = 0

    def _inputs(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        inputs = []
        for image in images:
            pixels = image * 255.0
            inputs.append({"image": pixels.flip(0) if self.bgr else pixels})
        return inputs

    def forward(
        self,
        images: list[torch.Tensor],
        targets: list[dict[str, Any]] | None = None,
        original_sizes: list[tuple[int, int]] | None = None,
    ):
        inputs = self._inputs(images)
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training")
            for item, image, target in zip(inputs, images, targets, strict=True):
                item["instances"] = target_to_instances(target, tuple(image.shape[-2:]))
            # detectron2's heads log to an EventStorage; the engine has none
            with EventStorage(self._iter):
                losses = self.model(inputs)
            self._iter += 1
            return {LOSS_NAMES.get(k, k): v for k, v in losses.items()}
        sizes = original_sizes or [tuple(img.shape[-2:]) for img in images]
        for item, (height, width) in zip(inputs, sizes, strict=True):
            item["height"], item["width"] = int(height), int(width)
        return [instances_to_detections(out["instances"]) for out in self.model(inputs)]

    def masks_on_boxes(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mask probabilities [N, 1, 2S, 2S] for XYXY `boxes` (input-image pixels) of 1-based
        `labels`: the mask branch on boxes given from outside (`shapeprop.eval.gt_boxes`)."""
        model = self.model
        images = model.preprocess_image(self._inputs([image]))
        features = model.backbone(images.tensor)
        holder = model.roi_heads if hasattr(model, "roi_heads") else model
        instances = Instances(
            images.image_sizes[0], pred_boxes=Boxes(boxes), pred_classes=label_to_class(labels)
        )
        feats = [features[f] for f in holder.mask_in_features]
        mask_inference(feats, holder.mask_pooler, holder.mask_head, holder.shapeprop, [instances])
        return instances.pred_masks

    def param_counts(self) -> dict[str, int]:
        """`total`, `mask_head` and `shapeprop` parameter counts, as `shapeprop.models.params.param_counts`."""
        return param_counts(self.model)


def param_counts(model: nn.Module) -> dict[str, int]:
    """Parameter counts of a detectron2 model with the plugin's mask branch (or of its wrapper)."""
    if isinstance(model, Detectron2Detector):
        model = model.model
    holder = model.roi_heads if hasattr(model, "roi_heads") else model
    return {
        "total": count_parameters(model),
        "mask_head": count_parameters(getattr(holder, "mask_head", None)),
        "shapeprop": count_parameters(getattr(holder, "shapeprop", None)),
    }


def build_detectron2_detector(
    model_cfg: ModelConfig,
    num_classes: int,
    min_size: int,
    max_size: int,
    score_thresh: float = 0.05,
    detections_per_img: int = 100,
) -> Detectron2Detector:
    """The experiment's detector built with detectron2 (`model.framework: detectron2`)."""
    cfg = config_from_model_config(
        model_cfg, num_classes, min_size, max_size, score_thresh, detections_per_img
    )
    return Detectron2Detector(build_model(cfg), cfg)
