"""Hand-made COCO-style records and perturbed detections to evaluate (the image-AP tests, and the
report's claim tests that evaluate them)."""

from __future__ import annotations

import numpy as np
import torch

from shapeprop.eval.coco import instances_to_results

CLASSES = ["cat", "dog", "car"]


def _poly(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _ann(x0, y0, w, h, category_id, iscrowd=0):
    return {
        "bbox": [x0, y0, w, h],
        "bbox_mode": 1,
        "category_id": category_id,
        "segmentation": _poly(x0, y0, x0 + w, y0 + h),
        "iscrowd": iscrowd,
    }


def _records(n_images=10):
    """Images with 0-4 objects of 3 categories and small, medium and large sizes; image 3 has
    nothing at all, image 5 only a crowd region besides its objects."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(n_images):
        anns = []
        for _ in range(0 if i == 3 else int(rng.integers(1, 5))):
            size = rng.choice([20, 50, 110])
            x0, y0 = rng.uniform(0, 120, size=2)
            w, h = size * rng.uniform(0.6, 1.0, size=2)
            anns.append(_ann(x0, y0, w, h, int(rng.integers(0, 3))))
        if i == 5:
            anns.append(_ann(150.0, 150.0, 60.0, 60.0, 1, iscrowd=1))
        records.append(
            {"file_name": f"{i}.png", "height": 240, "width": 260, "image_id": 10 + i, "annotations": anns}
        )
    return records


def _detections(records):
    """Perturbed GT (some twice, some of the wrong class), false positives, and over 100 detections
    of one category in image 0 (pycocotools keeps the top 100); every score distinct."""
    rng = np.random.default_rng(1)
    results = []
    for k, rec in enumerate(records):
        boxes, cats = [], []
        for j, ann in enumerate(rec["annotations"]):
            x, y, w, h = ann["bbox"]
            for _ in range(2 if j == 0 else 1):
                e = rng.normal(0, 0.1 * max(w, h), size=4)
                boxes.append([x + e[0], y + e[1], x + w + e[2], y + h + e[3]])
                cats.append(ann["category_id"] if rng.uniform() < 0.85 else (ann["category_id"] + 1) % 3)
        if k != 3:  # a false positive of each size cycle
            size = [15, 45, 100][k % 3]
            x0, y0 = rng.uniform(0, 130, size=2)
            boxes.append([x0, y0, x0 + size, y0 + size])
            cats.append(int(rng.integers(0, 3)))
        if k == 0:
            for _ in range(105):
                x0, y0 = rng.uniform(0, 200, size=2)
                boxes.append([x0, y0, x0 + 30, y0 + 30])
                cats.append(1)
        if not boxes:
            continue
        masks = np.zeros((len(boxes), rec["height"], rec["width"]), dtype=np.float32)
        for m, box in zip(masks, boxes, strict=True):
            x0, y0, x1, y1 = (max(int(round(v)), 0) for v in box)
            m[y0:y1, x0:x1] = 0.9
        results += instances_to_results(
            rec["image_id"],
            torch.tensor(boxes),
            torch.zeros(len(boxes)),
            torch.tensor(cats),
            torch.tensor(masks),
        )
    for r, s in zip(results, rng.permutation(len(results)), strict=True):
        r["score"] = float(0.01 + 0.98 * s / len(results))
    return results
