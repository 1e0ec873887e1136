"""The best-overlap analysis on hand-made maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shapeprop.eval.best_overlap import best_iou, best_overlap_table
from tests.helpers.coco_eval import _poly


def test_best_iou_hand_computed():
    prob = np.array([[0.9, 0.6, 0.2], [0.7, 0.4, 0.1], [0.3, 0.2, 0.0]])
    gt = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=bool)
    # t=0.35..0.4 -> {0.9,0.6,0.7,0.4} = gt exactly -> IoU 1; at t=0.5 -> 3/4.
    assert best_iou(prob, gt) == 1.0
    assert best_iou(prob, gt, thresholds=[0.5]) == pytest.approx(3 / 4)
    assert best_iou(prob, gt, thresholds=[0.25]) == pytest.approx(4 / 5)  # adds the 0.3 pixel


def test_best_overlap_table_hand_computed():
    # One 20x20 image, GT square rows/cols 4..11 (8x8 = 64 px); detection box = the GT box.
    rec = {
        "image_id": 7,
        "height": 20,
        "width": 20,
        "annotations": [
            {
                "id": 3,
                "bbox": [4, 4, 8, 8],
                "bbox_mode": 1,
                "category_id": 0,
                "segmentation": _poly(4, 4, 12, 12),
                "iscrowd": 0,
            },
            {
                "id": 4,
                "bbox": [0, 14, 3, 3],
                "bbox_mode": 1,
                "category_id": 0,
                "segmentation": _poly(0, 14, 3, 17),
                "iscrowd": 0,
            },
        ],
    }
    det = {
        "boxes": torch.tensor([[4.0, 4.0, 12.0, 12.0], [15.0, 15.0, 19.0, 19.0]]),
        "saliency": torch.tensor([[[[0.8, 0.0], [0.0, 0.0]]], [[[1.0, 1.0], [1.0, 1.0]]]]),
        "shape_activation": torch.tensor([[[[0.3, 0.3], [0.3, 0.3]]], [[[0.0, 0.0], [0.0, 0.0]]]]),
    }
    table = best_overlap_table([rec], {7: det})
    assert list(table.columns) == ["image_id", "gt_id", "area", "saliency_iou", "shape_iou"]
    assert len(table) == 1  # the second GT has no detection with IoU >= 0.5
    row = table.iloc[0]
    assert (row.image_id, row.gt_id, row.area) == (7, 3, 64)
    # A constant map is scaled to 1; torchvision's paste (1 px padding, bilinear) gives, at
    # t = 0.35, rows/cols 4..12 without their 4 corner pixels (77 px): the GT (4..11) loses only its
    # corner (4, 4), so IoU = 63 / (77 + 1); every other threshold is lower (checked by hand).
    assert row.shape_iou == pytest.approx(63 / 78)
    # Saliency: only the top-left cell is hot, so the pasted map is f(y) f(x): scaled to 1, padded
    # to [0, 1, 0, 0] per axis, its box doubled to 0..16 and resized to 17 px (align_corners=False:
    # pixel i samples (8i - 13) / 34), so f = (3, 11, 19, 27, 33, 25, 17, 9, 1) / 34 at i = 2..10,
    # 0 elsewhere. At t = 0.1 (34 f(y) * 34 f(x) >= 115.6) row 3 keeps cols 3..8, rows 4..8 cols
    # 3..9 and row 9 cols 4..8: 6 + 5 * 7 + 5 = 46 px, all but row 3 and col 3 (6 + 5 px) in the GT:
    # IoU = 35 / (64 + 46 - 35) = 7 / 15. t = 0.05 gives 36 / 83, t >= 0.15 at most 31 / 74: lower.
    assert row.saliency_iou == pytest.approx(7 / 15)
    assert row.saliency_iou < row.shape_iou
