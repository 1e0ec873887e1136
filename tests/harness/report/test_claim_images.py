"""The image term of a claim line: which runs can share bootstrap draws of their test images."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness.report.claim_images import line_image_se

SHAPE, SALIENCY = "best_overlap.csv:shape_iou", "best_overlap.csv:saliency_iou"
# One run per seed; its best_overlap.csv lists only the images where a detection matched an object.
OBJECTS = {
    "run0": pd.DataFrame(
        {"image_id": [1, 1, 2], "shape_iou": [0.8, 0.7, 0.9], "saliency_iou": [0.5, 0.6, 0.4]}
    ),
    "run1": pd.DataFrame({"image_id": [2, 3], "shape_iou": [0.6, 0.9], "saliency_iou": [0.5, 0.5]}),
}


def coco_gt(images: list[int]) -> pd.DataFrame:
    """The GT table's rows that list the evaluated images (category -1, as `matches_tables` writes)."""
    return pd.DataFrame(
        {"iou_type": "segm", "area": "all", "image_id": images, "category_id": -1, "num_gt": 0}
    )


def line(tested: dict[str, list[int]] | None):
    runs = pd.DataFrame(
        {
            "seed": [0, 1],
            "run_id": ["run0", "run1"],
            SHAPE: [100 * OBJECTS[r]["shape_iou"].mean() for r in ("run0", "run1")],
            SALIENCY: [100 * OBJECTS[r]["saliency_iou"].mean() for r in ("run0", "run1")],
        }
    )

    def read_table(run_id: str, name: str):
        if name == "best_overlap.csv":
            return OBJECTS[run_id]
        return coco_gt(tested[run_id]) if tested is not None and name == "coco_gt.csv" else None

    return line_image_se(runs, runs, [0, 1], (SHAPE, SALIENCY), read_table, {})


def test_object_tables_of_runs_tested_on_the_same_images_get_the_image_term():
    se, why = line({"run0": [1, 2, 3, 4], "run1": [1, 2, 3, 4]})
    assert why == "" and se > 0


def test_runs_tested_on_different_images_keep_the_seeds_only():
    se, why = line({"run0": [1, 2, 3, 4], "run1": [1, 2, 3, 5]})
    assert math.isnan(se) and why == "seeds only (the runs were tested on different images)"


def test_object_tables_on_different_images_without_coco_gt_keep_the_seeds_only():
    se, why = line(None)
    assert math.isnan(se) and "a run has no coco_gt.csv to say which it was tested on" in why


@pytest.mark.parametrize("tested", [None, {"run0": [1, 2, 3], "run1": [1, 2, 3]}])
def test_object_tables_on_the_same_images_need_no_coco_gt(tested, monkeypatch):
    monkeypatch.setitem(OBJECTS, "run1", OBJECTS["run1"].assign(image_id=[1, 2]))
    se, why = line(tested)
    assert why == "" and se > 0
