"""`ShapePropDatasetMapper`: detectron2's DatasetMapper that keeps each annotation's `has_mask`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils


class ShapePropDatasetMapper(DatasetMapper):
    """Like `DatasetMapper`, for records whose annotations carry `has_mask` (semi-supervision).

    Annotations with `has_mask` False (or without one and with no `segmentation`) get an all-zero
    mask, and every instance gets `gt_has_mask`; the ShapeProp heads take the mask loss only where
    it is True. Masks are always `BitMasks` (polygons cannot stand for "no mask"), whatever
    `INPUT.MASK_FORMAT` says. Use it as `build_detection_train_loader(cfg, mapper=ShapePropDatasetMapper(cfg))`.
    """

    def _transform_annotations(
        self, dataset_dict: dict[str, Any], transforms, image_shape: tuple[int, int]
    ) -> None:
        annos, flags = [], []
        for obj in dataset_dict.pop("annotations"):
            if obj.get("iscrowd", 0):
                continue
            obj = dict(obj)
            has_mask = bool(obj.get("has_mask", obj.get("segmentation") is not None))
            if not (has_mask and self.use_instance_mask):
                obj.pop("segmentation", None)
            if not self.use_keypoint:
                obj.pop("keypoints", None)
            obj = utils.transform_instance_annotations(
                obj, transforms, image_shape, keypoint_hflip_indices=self.keypoint_hflip_indices
            )
            if self.use_instance_mask and not has_mask:
                obj["segmentation"] = np.zeros(image_shape, dtype=np.uint8)
            annos.append(obj)
            flags.append(has_mask)
        instances = utils.annotations_to_instances(annos, image_shape, mask_format="bitmask")
        instances.gt_has_mask = torch.tensor(flags, dtype=torch.bool)
        if self.recompute_boxes and len(instances):
            # only a real mask can tighten its box after a crop
            tight = instances.gt_masks.get_bounding_boxes().tensor
            keep = instances.gt_has_mask
            instances.gt_boxes.tensor[keep] = tight[keep]
        # drop empty boxes, and empty masks unless the instance has no mask by design
        keep = instances.gt_boxes.nonempty()
        if instances.has("gt_masks"):
            keep &= instances.gt_masks.nonempty() | ~instances.gt_has_mask
        dataset_dict["instances"] = instances[keep]
