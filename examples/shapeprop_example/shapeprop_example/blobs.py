"""A small dataset written in COCO format, as a researcher's own data would be: four classes of
flat shapes on a noisy background, in two groups (`seen`, `unseen`) for Table 1-style partial
supervision. Written once per folder; `load_blobs` reads it back with the library's COCO reader."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from shapeprop.data.coco import load_coco_json

CLASSES = ["disc", "square", "triangle", "bar"]
GROUPS = {"seen": ["disc", "square"], "unseen": ["triangle", "bar"]}
SIZE = 64


def _shape(rng: np.random.Generator, cls: str) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cx, cy = rng.integers(14, SIZE - 14, 2)
    r = int(rng.integers(6, 13))
    if cls == "disc":
        cv2.circle(mask, (int(cx), int(cy)), r, 1, -1)
    elif cls == "square":
        cv2.rectangle(mask, (int(cx - r), int(cy - r)), (int(cx + r), int(cy + r)), 1, -1)
    elif cls == "triangle":
        points = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(mask, [points], 1)
    else:  # a bar: long and thin
        cv2.rectangle(mask, (int(cx - r), int(cy - 2)), (int(cx + r), int(cy + 2)), 1, -1)
    return mask


def write_blobs(folder: Path, split: str, num_images: int, seed: int = 0) -> Path:
    """Write `num_images` images of `split` and their COCO instances JSON; return the JSON's path."""
    rng = np.random.default_rng([seed, len(split), num_images])
    image_dir = folder / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        image = rng.normal(110, 25, (SIZE, SIZE, 3))
        for _ in range(int(rng.integers(1, 4))):
            cls = int(rng.integers(len(CLASSES)))
            mask = _shape(rng, CLASSES[cls])
            image[mask.astype(bool)] = rng.uniform(0, 255, 3)
            rle = mask_utils.encode(np.asfortranarray(mask))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": cls + 1,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                    "area": float(mask.sum()),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                }
            )
        cv2.imwrite(str(image_dir / f"{i:05d}.png"), image.clip(0, 255).astype(np.uint8))
        images.append({"id": i, "file_name": f"{i:05d}.png", "height": SIZE, "width": SIZE})
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)]
    json_path = folder / f"{split}.json"
    json_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return json_path


def load_blobs(root: Path | None = None, split: str = "train", num_images: int = 32, seed: int = 0):
    """The blobs dataset's `split`, written under `root` (default: ./blobs-data) on first use."""
    folder = Path(root or "blobs-data") / f"n{num_images}-s{seed}"
    json_path = folder / f"{split}.json"
    if not json_path.is_file():
        write_blobs(folder, split, num_images, seed)
    return load_coco_json(json_path, folder / split, "blobs", split, class_groups=GROUPS)
