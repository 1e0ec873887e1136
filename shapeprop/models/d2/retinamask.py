"""`RetinaMask`: detectron2's RetinaNet plus a RoI mask branch with ShapeProp (Fu et al., 2019)."""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.roi_heads import build_mask_head
from detectron2.structures import Boxes, ImageList, Instances, pairwise_iou
from torch import nn

from shapeprop.head import ShapePropHead
from shapeprop.models.d2.config import shapeprop_config_from_cfg, shapeprop_rois_per_image
from shapeprop.models.d2.mask import index_ground_truth, mask_inference, mask_losses


@META_ARCH_REGISTRY.register()
class RetinaMask(RetinaNet):
    """`MODEL.META_ARCHITECTURE: RetinaMask`.

    In training the mask branch sees the RetinaNet's current top `MODEL.RETINAMASK.MASK_TRAIN_ROIS`
    detections per image (computed without gradient, and without the inference score threshold,
    which no score clears early in training) together with the GT boxes; a RoI with IoU
    >= `MASK_FG_IOU` to a GT takes that GT's class, mask and `gt_has_mask`, the others are negative
    (ShapeProp's negative bags). At inference the branch runs on the final detections. The mask
    head is `ROI_MASK_HEAD` over `MODEL.RETINAMASK.MASK_IN_FEATURES`, with as many classes as
    `MODEL.RETINANET.NUM_CLASSES`.
    """

    @configurable
    def __init__(
        self,
        *,
        mask_in_features: list[str],
        mask_pooler: ROIPooler,
        mask_head: nn.Module,
        shapeprop: nn.Module | None = None,
        shapeprop_rois_per_image: int | None = None,
        mask_train_rois: int,
        mask_fg_iou: float,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mask_in_features = mask_in_features
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.shapeprop = shapeprop
        self.shapeprop_rois_per_image = shapeprop_rois_per_image
        self.mask_train_rois = mask_train_rois
        self.mask_fg_iou = mask_fg_iou

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        shapes = ret["backbone"].output_shape()
        in_features = list(cfg.MODEL.RETINAMASK.MASK_IN_FEATURES)
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(
                f"MODEL.RETINAMASK.MASK_IN_FEATURES: {missing} not among the backbone outputs {list(shapes)}"
            )
        num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
        sp = shapeprop_config_from_cfg(cfg)
        channels = shapes[in_features[0]].channels
        mask = cfg.MODEL.ROI_MASK_HEAD
        res = mask.POOLER_RESOLUTION
        head_cfg = cfg.clone()  # the mask head reads its class count from ROI_HEADS
        head_cfg.defrost()
        head_cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
        prior = sp.prior_channels if sp is not None else 0
        ret.update(
            mask_in_features=in_features,
            mask_pooler=ROIPooler(
                output_size=res,
                scales=tuple(1.0 / shapes[f].stride for f in in_features),
                sampling_ratio=mask.POOLER_SAMPLING_RATIO,
                pooler_type=mask.POOLER_TYPE or "ROIAlignV2",
            ),
            mask_head=build_mask_head(head_cfg, ShapeSpec(channels=channels + prior, width=res, height=res)),
            shapeprop=ShapePropHead(channels, num_classes, sp) if sp is not None else None,
            shapeprop_rois_per_image=shapeprop_rois_per_image(cfg),
            mask_train_rois=cfg.MODEL.RETINAMASK.MASK_TRAIN_ROIS,
            mask_fg_iou=cfg.MODEL.RETINAMASK.MASK_FG_IOU,
        )
        return ret

    def forward(self, batched_inputs: list[dict[str, torch.Tensor]]):
        """detectron2's model interface: losses in training, `[{"instances": Instances}]` otherwise."""
        images = self.preprocess_image(batched_inputs)
        all_features = self.backbone(images.tensor)
        features = [all_features[f] for f in self.head_in_features]
        mask_features = [all_features[f] for f in self.mask_in_features]
        predictions = self.head(features)
        if self.training:
            if "instances" not in batched_inputs[0]:
                raise ValueError("RetinaMask: instance annotations are missing in training")
            gt_instances = index_ground_truth([x["instances"].to(self.device) for x in batched_inputs])
            losses = self.forward_training(images, features, predictions, gt_instances)
            rois = self._mask_training_rois(images, features, predictions, gt_instances)
            losses.update(
                mask_losses(
                    mask_features,
                    self.mask_pooler,
                    self.mask_head,
                    self.shapeprop,
                    rois,
                    gt_instances,
                    self.num_classes,
                    self.shapeprop_rois_per_image,
                )
            )
            return losses
        results = self.forward_inference(images, features, predictions)
        results = mask_inference(mask_features, self.mask_pooler, self.mask_head, self.shapeprop, results)
        processed = []
        for result, inputs, size in zip(results, batched_inputs, images.image_sizes, strict=True):
            height, width = inputs.get("height", size[0]), inputs.get("width", size[1])
            processed.append({"instances": detector_postprocess(result, height, width)})
        return processed

    @torch.no_grad()
    def _mask_training_rois(
        self, images: ImageList, features: list[torch.Tensor], predictions, gt_instances: list[Instances]
    ) -> list[Instances]:
        """Top detections + GT boxes per image, labelled by their best-overlapping GT."""
        # inference applies sigmoid_ in place: work on copies, never on the tensors being trained
        detached = [[p.detach().clone() for p in level] for level in predictions]
        saved = self.max_detections_per_image, self.test_score_thresh
        self.max_detections_per_image, self.test_score_thresh = self.mask_train_rois, 0.0
        try:
            detections = self.forward_inference(images, features, detached)
        finally:
            self.max_detections_per_image, self.test_score_thresh = saved
        rois = []
        for det, gt in zip(detections, gt_instances, strict=True):
            boxes = Boxes.cat([det.pred_boxes, gt.gt_boxes])
            roi = Instances(gt.image_size, proposal_boxes=boxes)
            classes = torch.full((len(boxes),), self.num_classes, dtype=torch.long, device=boxes.device)
            if len(gt):
                iou, idx = pairwise_iou(boxes, gt.gt_boxes).max(dim=1)
                classes = torch.where(iou >= self.mask_fg_iou, gt.gt_classes[idx], classes)
                for name, value in gt.get_fields().items():
                    if name.startswith("gt_") and name != "gt_classes":
                        roi.set(name, value[idx])
            roi.gt_classes = classes
            rois.append(roi)
        return rois
