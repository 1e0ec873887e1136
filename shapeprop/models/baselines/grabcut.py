"""GrabCut Mask R-CNN baseline (Khoreva et al., "Simple Does It"): pseudo masks for box-only instances.

Each box-only annotation gets the foreground of `cv2.grabCut` initialised with its box (on a crop
around the box, which is all the colour models need); an empty or failed GrabCut falls back to
the filled box. Results are cached per split fingerprint, so a suite computes them once.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from shapeprop.data.masks import mask_to_rle
from shapeprop.eval.coco import bbox_xywh
from shapeprop.files import write_atomic

MIN_FOREGROUND = 0.05  # a GrabCut result below this fraction of its box falls back to the box


def default_cache_dir() -> Path:
    """`$SHAPEPROP_CACHE/grabcut`, else `~/.cache/shapeprop/grabcut`."""
    base = os.environ.get("SHAPEPROP_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "shapeprop") / "grabcut"


def grabcut_box(image: np.ndarray, box_xywh: list[float], iterations: int = 5) -> np.ndarray:
    """Binary [H, W] foreground mask of the object in `box_xywh` of a BGR uint8 image."""
    h, w = image.shape[:2]
    x, y, bw, bh = box_xywh
    x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
    x1, y1 = min(w, int(np.ceil(x + bw))), min(h, int(np.ceil(y + bh)))
    out = np.zeros((h, w), np.uint8)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return out
    # crop with a margin of half the box on each side (at least 8 px) for the background model
    mx, my = max(8, (x1 - x0) // 2), max(8, (y1 - y0) // 2)
    cx0, cy0, cx1, cy1 = max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my)
    crop = np.ascontiguousarray(image[cy0:cy1, cx0:cx1])
    rect = (x0 - cx0, y0 - cy0, x1 - x0, y1 - y0)
    filled = False
    if rect[2] >= 2 and rect[3] >= 2 and (cx1 - cx0 > rect[2] or cy1 - cy0 > rect[3]):
        mask = np.zeros(crop.shape[:2], np.uint8)
        cv2.setRNGSeed(0)  # GrabCut's GMM initialisation is random
        try:
            cv2.grabCut(
                crop, mask, rect, np.zeros((1, 65)), np.zeros((1, 65)), iterations, cv2.GC_INIT_WITH_RECT
            )
            fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
            if fg.sum() >= MIN_FOREGROUND * rect[2] * rect[3]:
                out[cy0:cy1, cx0:cx1] = fg
                filled = True
        except cv2.error:
            pass
    if not filled:
        out[y0:y1, x0:x1] = 1
    return out


def _image_masks(job: tuple[str, list[tuple[str, list[float]]]]) -> list[tuple[str, dict[str, Any]]]:
    path, boxes = job
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"GrabCut baseline: cannot read image {path}")
    return [(i, mask_to_rle(grabcut_box(image, box))) for i, box in boxes]


def grabcut_pseudo_masks(
    records: list[dict[str, Any]],
    fingerprint: str,
    cache_dir: Path | None = None,
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """New records in which every non-crowd annotation without a mask gets a GrabCut mask
    (`has_mask` True, `pseudo_mask` True). Cached in `cache_dir/<fingerprint>.json`, keyed by
    `image_id:annotation index`; `workers` processes compute what the cache lacks."""
    cache = Path(cache_dir or default_cache_dir()) / f"{fingerprint}.json"
    todo: list[tuple[str, list[tuple[str, list[float]]]]] = []
    for rec in records:
        boxes = [
            (a, bbox_xywh(ann))
            for a, ann in enumerate(rec["annotations"])
            if not ann.get("has_mask") and not ann.get("iscrowd")
        ]
        if boxes:
            todo.append((rec["file_name"], [(f"{rec['image_id']}:{a}", b) for a, b in boxes]))
    masks: dict[str, Any] = {}
    if cache.is_file():
        masks = json.loads(cache.read_text())
    missing = [job for job in todo if any(k not in masks for k, _ in job[1])]
    if missing:
        workers = workers if workers is not None else min(8, os.cpu_count() or 1)
        if workers > 1 and len(missing) > 1:
            with ProcessPoolExecutor(workers) as pool:
                done = list(pool.map(_image_masks, missing, chunksize=8))
        else:
            done = [_image_masks(job) for job in missing]
        for part in done:
            masks.update(dict(part))
        write_atomic(cache, json.dumps(masks))
    out = []
    for rec in records:
        anns = []
        for a, ann in enumerate(rec["annotations"]):
            key = f"{rec['image_id']}:{a}"
            if key in masks and not ann.get("has_mask") and not ann.get("iscrowd"):
                ann = dict(ann, segmentation=masks[key], has_mask=True, pseudo_mask=True)
            anns.append(ann)
        out.append(dict(rec, annotations=anns))
    return out
