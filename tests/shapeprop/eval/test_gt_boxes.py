"""Mask IoU of the detector given the ground-truth boxes, against a hand-computed value."""

from __future__ import annotations

import math

import pytest
import torch
from pycocotools import mask as mask_utils


def test_gt_box_mask_iou_equals_a_hand_computed_value(tmp_path, one_thread):
    """A mask branch that predicts 'everything' on a box gives IoU = mask area / box area (up to the
    box's border pixels, which the paste interpolates), and 'nothing' gives IoU 0."""
    from shapeprop.config import ModelConfig
    from shapeprop.data import catalog
    from shapeprop.eval.gt_boxes import gt_box_mask_table, mean_iou
    from shapeprop.models.build import build_detector
    from shapeprop.models.mask_branch import find_mask_branch

    ds = catalog.load("synthetic", root=tmp_path, split="val", num_images=3, image_size=64)
    records = ds.records
    records[0]["annotations"][0]["has_mask"] = False  # no mask: no row
    model = build_detector(ModelConfig(arch="mask_rcnn", backbone="tiny"), len(ds.metadata.classes), 64, 64)
    branch = find_mask_branch(model)

    def predict_constant(value):
        branch.predict = lambda features, boxes, labels, shapes: [
            {"masks": torch.full((len(b), 1, 28, 28), value)} for b in boxes
        ]
        return gt_box_mask_table(model, records, 64, 64)

    table = predict_constant(1.0)
    bounds = []
    for rec in records:
        for ann in rec["annotations"]:
            if ann["has_mask"]:
                area = mask_utils.decode(ann["segmentation"]).sum()
                x, y, w, h = ann["bbox"]  # integer here: the extent of an RLE
                bounds.append(
                    (ann["category_id"], area / ((w + 2) * (h + 2)), area / max(1, (w - 2) * (h - 2)))
                )
    assert len(table) == len(bounds) == sum(len(r["annotations"]) for r in records) - 1
    assert table["category_id"].tolist() == [c for c, _, _ in bounds]
    for iou, (_, low, high) in zip(table["iou"], bounds, strict=True):
        assert low <= iou <= high
    assert mean_iou(table) == pytest.approx(100 * table["iou"].mean())
    assert math.isnan(mean_iou(table, [99]))
    assert (predict_constant(0.0)["iou"] == 0).all()
