"""The box-as-mask floor: every box-only instance is trained on its filled box as its mask.

The trivial baseline of weakly supervised segmentation (Khoreva et al., "Simple Does It", use it
as their starting point): a model trained this way predicts box-like masks for the classes that
had no masks, so every method that learns extent must beat it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shapeprop.data.masks import mask_to_rle
from shapeprop.eval.coco import bbox_xywh


def filled_box_rle(box_xywh: list[float], height: int, width: int) -> dict[str, Any]:
    """The RLE of the pixels a box covers (rounded outwards, clipped to the image)."""
    x, y, w, h = box_xywh
    mask = np.zeros((height, width), np.uint8)
    mask[max(0, int(np.floor(y))) : int(np.ceil(y + h)), max(0, int(np.floor(x))) : int(np.ceil(x + w))] = 1
    return mask_to_rle(mask)


def box_pseudo_masks(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """New records in which every non-crowd annotation without a mask gets its filled box as its
    mask (`has_mask` True, `pseudo_mask` True)."""
    out = []
    for rec in records:
        anns = []
        for ann in rec["annotations"]:
            if not ann.get("has_mask") and not ann.get("iscrowd"):
                rle = filled_box_rle(bbox_xywh(ann), rec["height"], rec["width"])
                ann = dict(ann, segmentation=rle, has_mask=True, pseudo_mask=True)
            anns.append(ann)
        out.append(dict(rec, annotations=anns))
    return out
