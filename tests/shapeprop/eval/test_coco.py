"""COCO evaluation against pycocotools run directly, category subsets and their resolution."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from shapeprop.eval.coco import evaluate_coco, instances_to_results, resolve_categories
from tests.helpers.coco_eval import _poly

CLASSES = ["cat", "dog", "car"]


def _records():
    rng = np.random.default_rng(0)
    records = []
    for i in range(6):
        anns = []
        for _ in range(3):
            size = rng.choice([20, 50, 110])
            x0, y0 = rng.uniform(0, 100, size=2)
            x1, y1 = x0 + size * rng.uniform(0.6, 1.0), y0 + size * rng.uniform(0.6, 1.0)
            anns.append(
                {
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "bbox_mode": 1,
                    "category_id": int(rng.integers(0, 3)),
                    "segmentation": _poly(x0, y0, x1, y1),
                    "iscrowd": 0,
                    "has_mask": True,
                }
            )
        records.append(
            {"file_name": f"{i}.png", "height": 240, "width": 260, "image_id": 10 + i, "annotations": anns}
        )
    return records


def _detections(records):
    """Perturbed GT plus false positives, as model outputs (XYXY boxes, probability masks)."""
    rng = np.random.default_rng(1)
    results = []
    for rec in records:
        boxes, scores, cats, masks = [], [], [], []
        for ann in rec["annotations"] + [
            dict(rec["annotations"][0], category_id=(rec["annotations"][0]["category_id"] + 1) % 3)
        ]:
            x, y, w, h = ann["bbox"]
            j = rng.normal(0, 0.08 * max(w, h), size=4)
            box = [x + j[0], y + j[1], x + w + j[2], y + h + j[3]]
            boxes.append(box)
            scores.append(rng.uniform(0.1, 1.0))
            cats.append(ann["category_id"])
            m = np.zeros((rec["height"], rec["width"]), dtype=np.float32)
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            m[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = rng.uniform(0.55, 1.0)
            masks.append(m)
        results += instances_to_results(
            rec["image_id"],
            torch.tensor(boxes),
            torch.tensor(scores),
            torch.tensor(cats),
            torch.tensor(np.stack(masks)),
        )
    return results


def _pycocotools_direct(tmp_path, records, results, iou_type, cat_ids=None):
    """The reference: GT and results written as JSON files, evaluated by pycocotools alone."""
    images, anns = [], []
    for rec in records:
        images.append({"id": rec["image_id"], "height": rec["height"], "width": rec["width"]})
        for a in rec["annotations"]:
            rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], rec["height"], rec["width"]))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": rec["image_id"],
                    "category_id": a["category_id"],
                    "bbox": a["bbox"],
                    "area": float(mask_utils.area(rle)),
                    "iscrowd": 0,
                    "segmentation": a["segmentation"],
                }
            )
    gt_file, dt_file = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_file.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES)],
            }
        )
    )
    dt_file.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        ev = COCOeval(gt, gt.loadRes(str(dt_file)), iou_type)
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:6]


@pytest.mark.parametrize("cat_ids", [None, [0, 2]])
def test_evaluator_equals_pycocotools(tmp_path, cat_ids):
    records = _records()
    results = _detections(records)
    metrics = evaluate_coco(records, results, CLASSES, category_ids=cat_ids)
    for iou_type in ("segm", "bbox"):
        ref = _pycocotools_direct(tmp_path, records, results, iou_type, cat_ids)
        ours = [metrics[f"{iou_type}_{k}"] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
        for a, b in zip(ours, ref, strict=True):
            if b < 0:
                assert math.isnan(a)
            else:
                assert a == pytest.approx(100 * b, abs=1e-9)
    assert 0 < metrics["segm_AP"] < 100


def test_category_subset_changes_result_and_no_detections_gives_zero():
    records = _records()
    results = _detections(records)
    all_cats = evaluate_coco(records, results, CLASSES)
    only_dog = evaluate_coco(records, results, CLASSES, category_ids=[1])
    assert all_cats["bbox_AP"] != only_dog["bbox_AP"]
    empty = evaluate_coco(records, [], CLASSES)
    assert empty["segm_AP"] == 0.0 and empty["bbox_AP50"] == 0.0


def test_resolve_categories():
    groups = {"voc": ["cat", "dog"], "nonvoc": ["car"]}
    assert resolve_categories("voc", CLASSES, groups) == [0, 1]
    assert resolve_categories(["car", "cat"], CLASSES, groups) == [0, 2]
    assert resolve_categories(None, CLASSES, groups) is None
    with pytest.raises(ValueError, match="zebra"):
        resolve_categories(["zebra"], CLASSES, groups)


def test_missing_gt_segmentation_is_named():
    records = _records()
    records[2]["annotations"][1]["segmentation"] = None
    with pytest.raises(ValueError, match="12"):
        evaluate_coco(records, [], CLASSES)
