"""Box pseudo masks: the filled boxes."""

from __future__ import annotations

import numpy as np
import pytest

from shapeprop.data.masks import annotation_to_mask
from shapeprop.models.baselines.box_masks import box_pseudo_masks

pytestmark = pytest.mark.usefixtures("one_thread")


def test_box_pseudo_masks_are_the_filled_boxes():
    """Box-only instances get exactly their box's pixels (XYWH or XYXY boxes, fractional corners
    rounded outwards); real masks and crowds stay as they were."""
    box_only = {"bbox": [2.0, 3.0, 4.0, 2.0], "has_mask": False, "category_id": 0, "iscrowd": 0}
    xyxy = {"bbox": [1.5, 0.0, 3.2, 2.0], "bbox_mode": 0, "has_mask": False, "category_id": 1, "iscrowd": 0}
    real = {
        "bbox": [0.0, 0.0, 2.0, 2.0],
        "has_mask": True,
        "segmentation": [[0, 0, 2, 0, 2, 2]],
        "iscrowd": 0,
    }
    crowd = {"bbox": [0.0, 0.0, 2.0, 2.0], "has_mask": False, "iscrowd": 1}
    (rec,) = box_pseudo_masks([{"height": 8, "width": 10, "annotations": [box_only, xyxy, real, crowd]}])
    first, second, kept, kept_crowd = rec["annotations"]
    expected = np.zeros((8, 10), np.uint8)
    expected[3:5, 2:6] = 1
    np.testing.assert_array_equal(annotation_to_mask(first, 8, 10), expected)
    expected = np.zeros((8, 10), np.uint8)
    expected[0:2, 1:4] = 1  # x from 1.5 down to 1, up from 3.2 to 4
    np.testing.assert_array_equal(annotation_to_mask(second, 8, 10), expected)
    assert first["has_mask"] and first["pseudo_mask"] and second["pseudo_mask"]
    assert kept is real and kept_crowd is crowd
