"""`ShapePropROIHeads`: detectron2's StandardROIHeads with the ShapeProp head in the mask branch."""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import build_mask_head
from detectron2.structures import ImageList, Instances
from torch import nn

from shapeprop.head import ShapePropHead
from shapeprop.models.d2.config import shapeprop_config_from_cfg, shapeprop_rois_per_image
from shapeprop.models.d2.mask import index_ground_truth, mask_inference, mask_losses


@ROI_HEADS_REGISTRY.register()
class ShapePropROIHeads(StandardROIHeads):
    """`MODEL.ROI_HEADS.NAME: ShapePropROIHeads`.

    The box branch is StandardROIHeads' own. The mask branch pools `ROI_HEADS.IN_FEATURES` with
    `ROI_MASK_HEAD`'s pooler; with `MODEL.SHAPEPROP.ENABLED` the ShapeProp head runs on the box head's
    sampled RoIs (training) or the detections (inference) and its shape prior widens the mask head's
    input by `PRIOR_CHANNELS`. The mask loss covers only RoIs whose GT has `gt_has_mask`, so the
    heads also serve as a semi-supervised baseline with ShapeProp disabled.
    """

    @configurable
    def __init__(
        self,
        *,
        shapeprop: nn.Module | None = None,
        shapeprop_rois_per_image: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.shapeprop = shapeprop
        self.shapeprop_rois_per_image = shapeprop_rois_per_image

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        sp = shapeprop_config_from_cfg(cfg)
        if sp is not None:
            if not cfg.MODEL.MASK_ON:
                raise ValueError("MODEL.SHAPEPROP.ENABLED needs MODEL.MASK_ON: ShapeProp feeds the mask head")
            channels = input_shape[cfg.MODEL.ROI_HEADS.IN_FEATURES[0]].channels
            ret["shapeprop"] = ShapePropHead(channels, cfg.MODEL.ROI_HEADS.NUM_CLASSES, sp)
            ret["shapeprop_rois_per_image"] = shapeprop_rois_per_image(cfg)
        return ret

    @classmethod
    def _init_mask_head(cls, cfg, input_shape: dict[str, ShapeSpec]):
        if not cfg.MODEL.MASK_ON:
            return {}
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        mask = cfg.MODEL.ROI_MASK_HEAD
        if not mask.POOLER_TYPE:
            raise ValueError("ShapePropROIHeads needs RoI features: MODEL.ROI_MASK_HEAD.POOLER_TYPE is empty")
        sp = shapeprop_config_from_cfg(cfg)
        channels = input_shape[in_features[0]].channels + (sp.prior_channels if sp is not None else 0)
        res = mask.POOLER_RESOLUTION
        return {
            "mask_in_features": in_features,
            "mask_pooler": ROIPooler(
                output_size=res,
                scales=tuple(1.0 / input_shape[k].stride for k in in_features),
                sampling_ratio=mask.POOLER_SAMPLING_RATIO,
                pooler_type=mask.POOLER_TYPE,
            ),
            "mask_head": build_mask_head(cfg, ShapeSpec(channels=channels, width=res, height=res)),
        }

    def forward(
        self,
        images: ImageList,
        features: dict[str, torch.Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, torch.Tensor]]:
        if not self.training:
            return super().forward(images, features, proposals, targets)
        if not targets:
            raise ValueError("ShapePropROIHeads: targets are required in training")
        proposals = self.label_and_sample_proposals(proposals, index_ground_truth(targets))
        losses = self._forward_box(features, proposals)
        losses.update(self._forward_mask(features, proposals, targets))
        losses.update(self._forward_keypoint(features, proposals))
        return proposals, losses

    def _forward_mask(
        self,
        features: dict[str, torch.Tensor],
        instances: list[Instances],
        targets: list[Instances] | None = None,
    ):
        """Training: losses over the sampled proposals (MIL bags need `targets`); inference: the
        detections with `pred_masks` (+ `saliency`, `shape_activation`)."""
        if not self.mask_on:
            return {} if self.training else instances
        feats = [features[f] for f in self.mask_in_features]
        if self.training:
            if self.shapeprop is not None and targets is None:
                raise ValueError("ShapePropROIHeads: the MIL loss needs the targets")
            return mask_losses(
                feats,
                self.mask_pooler,
                self.mask_head,
                self.shapeprop,
                instances,
                targets,
                self.num_classes,
                self.shapeprop_rois_per_image,
            )
        return mask_inference(feats, self.mask_pooler, self.mask_head, self.shapeprop, instances)
