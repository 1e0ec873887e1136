"""What a synthetic benchmark version gives away, measured without training (issue 41).

For each generator version, on the first N images of a split: the share of objects in each of
COCO's area ranges (small < 32^2 <= medium < 96^2 <= large), and per class group the mean IoU with
the GT mask of two masks that need no learning, both made from the GT box: the filled box (the
floor) and GrabCut's foreground (the colour cue: on COCO GrabCut is the weakest learned row, so
on a faithful miniature it should not come near a learned model's masks).

    python tools/synthetic_cues.py --split test --images 300 --size 160 --versions 1 3 --out reports/mini/cues
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from shapeprop.data.masks import annotation_to_mask
from shapeprop.data.synthetic import load_synthetic
from shapeprop.data.synthetic_render import class_groups
from shapeprop.eval.coco import bbox_xywh
from shapeprop.models.baselines.box_masks import filled_box_rle
from shapeprop.models.baselines.grabcut import grabcut_box

AREA_RANGES = {"small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, float("inf"))}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def box_and_grabcut_iou(
    image_bgr: np.ndarray, ann: dict, height: int, width: int
) -> tuple[float, float, float]:
    """(GT area, IoU of the filled GT box, IoU of GrabCut started from it) for one annotation."""
    gt = annotation_to_mask(ann, height, width).astype(bool)
    box_xywh = bbox_xywh(ann)
    box = annotation_to_mask({"segmentation": filled_box_rle(box_xywh, height, width)}, height, width)
    grabcut = grabcut_box(image_bgr, box_xywh)
    return float(gt.sum()), iou(box.astype(bool), gt), iou(grabcut.astype(bool), gt)


def object_table(version: int, split: str, images: int, size: int) -> pd.DataFrame:
    """One row per object: its group, area range, and the IoU of the filled box and of GrabCut."""
    dataset = load_synthetic(None, split, num_images=images, image_size=size, version=version)
    group_of = {name: group for group, names in class_groups(version).items() for name in names}
    rows = []
    for record in dataset.records:
        image = cv2.imread(str(record["file_name"]), cv2.IMREAD_COLOR)
        for ann in record["annotations"]:
            area, box, grabcut = box_and_grabcut_iou(image, ann, record["height"], record["width"])
            rows.append(
                {
                    "version": version,
                    "group": group_of[dataset.metadata.classes[ann["category_id"]]],
                    "range": next(r for r, (lo, hi) in AREA_RANGES.items() if lo <= area < hi),
                    "box_iou": box,
                    "grabcut_iou": grabcut,
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--versions", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--out", type=Path, default=None, help="folder for cues.csv (optional)")
    args = parser.parse_args()
    table = pd.concat([object_table(v, args.split, args.images, args.size) for v in args.versions])
    shares = pd.crosstab(table["version"], table["range"], normalize="index").round(3)
    ious = table.groupby(["version", "group"])[["box_iou", "grabcut_iou"]].mean().round(3)
    print(f"{args.split}, first {args.images} images at {args.size} px: area ranges (share of objects)")
    print(shares.to_string())
    print("\nmean IoU with the GT mask, from the GT box")
    print(ious.to_string())
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        summary = ious.join(shares, on="version")
        summary.to_csv(args.out / "cues.csv")


if __name__ == "__main__":
    main()
