"""Annotation segmentations (polygons or COCO RLE) to RLE / binary masks, through pycocotools."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from shapeprop.data.records import DataError


def _as_pycoco_rle(segm: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    if isinstance(segm.get("counts"), list):  # uncompressed RLE (COCO crowd regions)
        return mask_utils.frPyObjects(segm, height, width)
    counts = segm["counts"]
    return {"size": list(segm["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}


def annotation_to_rle(ann: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    """The annotation's mask as one compressed COCO RLE (`counts` bytes, `size` [h, w]).

    Polygons are rasterised with pycocotools (several polygons are merged); RLE, compressed or
    not, is converted. An annotation without a segmentation raises DataError.
    """
    segm = ann.get("segmentation")
    if isinstance(segm, list):
        polygons = [p for p in segm if len(p) >= 6]
        if not polygons:
            raise DataError("no polygon with at least 3 points", key="segmentation")
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        return _as_pycoco_rle(segm, height, width)
    raise DataError(f"annotation has no usable segmentation ({type(segm).__name__})", key="segmentation")


def annotation_to_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    """The annotation's mask as a uint8 [height, width] array of 0/1."""
    return mask_utils.decode(annotation_to_rle(ann, height, width))


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """A binary [h, w] mask as a JSON-serialisable compressed RLE (`counts` str)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_bbox(rle: dict[str, Any]) -> list[float]:
    """XYWH extent of the pixels of an RLE (pycocotools convention: a pixel covers [x, x+1))."""
    return [float(v) for v in mask_utils.toBbox(_as_pycoco_rle(rle, *rle["size"]))]


def rle_area(rle: dict[str, Any]) -> int:
    """Number of foreground pixels of an RLE."""
    return int(mask_utils.area(_as_pycoco_rle(rle, *rle["size"])))
