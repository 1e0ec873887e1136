"""Writers of small datasets in their real on-disk formats, for tests (any engineer's).

Each writer returns the ground truth it encoded (masks as numpy arrays, boxes, classes), so a
test can check a loader against what was written rather than against hard-coded numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE (`counts` a list of run lengths, column-major, zeros first)."""
    flat = mask.astype(np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0, *runs]
    return {"size": list(mask.shape), "counts": runs}


def compressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's compressed RLE with `counts` as a str (as in the JSON files)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def polygon_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """The mask pycocotools draws for `polygons` (the reference rasteriser)."""
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)))


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- COCO ----------------------------------------------------------------------------------------

COCO_CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
    {"id": 25, "name": "giraffe", "supercategory": "animal"},
]


def write_coco(root: Path, split: str = "val", height: int = 48, width: int = 64) -> dict[str, Any]:
    """A COCO 2017 layout with polygons (one two-part), a compressed RLE and an uncompressed-RLE crowd.

    Returns {"json": path, "masks": {ann_id: mask}, "crowd_ids": [...], "categories": [...]} with
    two images (ids 7 and 9) and non-contiguous category ids 1, 3, 18, 25.
    """
    image_dir = root / f"{split}2017"
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    images, annotations, masks = [], [], {}
    for image_id in (7, 9):
        name = f"{image_id:012d}.jpg"
        Image.fromarray(random_image(height, width, image_id)).save(image_dir / name, quality=90)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})

    def add(ann_id, image_id, cat, segm, mask, iscrowd=0):
        rle = mask_utils.encode(np.asfortranarray(mask))
        bbox = [float(v) for v in mask_utils.toBbox(rle)]
        annotations.append(
            {"id": ann_id, "image_id": image_id, "category_id": cat, "segmentation": segm,
             "area": float(mask.sum()), "bbox": bbox, "iscrowd": iscrowd}
        )  # fmt: skip
        masks[ann_id] = mask

    triangle = [[5.0, 5.0, 30.0, 5.0, 5.0, 30.0]]
    add(1, 7, 1, triangle, polygon_mask(triangle, height, width))
    two_parts = [[35.0, 10.0, 45.0, 10.0, 45.0, 20.0, 35.0, 20.0], [50.0, 30.0, 60.0, 30.0, 55.0, 40.0]]
    add(2, 7, 25, two_parts, polygon_mask(two_parts, height, width))
    ring = np.zeros((height, width), np.uint8)
    ring[10:30, 10:30] = 1
    ring[15:25, 15:25] = 0  # a hole: only RLE can say this
    add(3, 9, 3, compressed_rle(ring), ring)
    crowd = np.zeros((height, width), np.uint8)
    crowd[30:46, 20:60] = 1
    add(4, 9, 1, uncompressed_rle(crowd), crowd, iscrowd=1)
    dog = np.zeros((height, width), np.uint8)
    dog[2:12, 40:62] = 1
    add(5, 9, 18, compressed_rle(dog), dog)
    data = {"images": images, "annotations": annotations, "categories": COCO_CATEGORIES}
    json_path = root / "annotations" / f"instances_{split}2017.json"
    json_path.write_text(json.dumps(data))
    return {"json": json_path, "masks": masks, "crowd_ids": [4], "categories": COCO_CATEGORIES}
