"""COCO-style box and mask AP through pycocotools, optionally on a subset of the categories.

Ground truth is built in memory from records (detectron2 dataset dicts, `category_id` 0-based);
detections are COCO result dicts in original image coordinates (`image_id`, `category_id`,
`bbox` XYWH, `score`, and `segmentation` as a compressed RLE for mask AP).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from shapeprop.data.masks import annotation_to_rle
from shapeprop.eval.image_ap import GT_COLUMNS, empty_detections, matches_tables

# Order of COCOeval.stats[:6]; the metric names get an iou-type prefix (`segm_AP`, `bbox_AP50`...).
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
BOX_MODE_XYXY_ABS = 0
BOX_MODE_XYWH_ABS = 1


def resolve_categories(
    spec: Sequence[str] | str | None, classes: Sequence[str], class_groups: dict[str, list[str]] | None = None
) -> list[int] | None:
    """Category ids (0-based indices into `classes`) named by `spec`.

    `spec` is None (all classes), a class-group name of the dataset (e.g. 'voc', 'nonvoc'), a
    single class name, or a list of class names. Unknown names raise ValueError naming them.
    """
    if spec is None:
        return None
    groups = class_groups or {}
    if isinstance(spec, str):
        names = groups[spec] if spec in groups else [spec]
    else:
        names = list(spec)
    index = {name: i for i, name in enumerate(classes)}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise ValueError(
            f"eval.categories: unknown class or group {unknown}; classes are {list(classes)}, "
            f"groups are {sorted(groups)}"
        )
    if not names:
        raise ValueError("eval.categories: the category subset is empty")
    return sorted(index[n] for n in names)


def bbox_xywh(ann: dict[str, Any]) -> list[float]:
    """The annotation box as XYWH (from XYWH_ABS or XYXY_ABS `bbox_mode`)."""
    x0, y0, a, b = (float(v) for v in ann["bbox"])
    mode = ann.get("bbox_mode", BOX_MODE_XYWH_ABS)
    if mode == BOX_MODE_XYWH_ABS:
        return [x0, y0, a, b]
    if mode == BOX_MODE_XYXY_ABS:
        return [x0, y0, a - x0, b - y0]
    raise ValueError(f"annotation bbox_mode {mode!r} is not supported (XYWH_ABS=1 or XYXY_ABS=0)")


def records_to_coco(
    records: Sequence[dict[str, Any]], classes: Sequence[str], with_masks: bool = True
) -> COCO:
    """An in-memory pycocotools COCO object holding the ground truth of `records`.

    With `with_masks`, every annotation must have a segmentation (its area is the mask area,
    as in COCO); otherwise the box area is used.
    """
    images, annotations = [], []
    for rec in records:
        h, w = int(rec["height"]), int(rec["width"])
        images.append(
            {"id": rec["image_id"], "height": h, "width": w, "file_name": str(rec.get("file_name", ""))}
        )
        for ann in rec.get("annotations", []):
            bbox = bbox_xywh(ann)
            out = {
                "id": len(annotations) + 1,
                "image_id": rec["image_id"],
                "category_id": int(ann["category_id"]),
                "bbox": bbox,
                "iscrowd": int(ann.get("iscrowd", 0)),
            }
            if with_masks:
                if ann.get("segmentation") is None:
                    raise ValueError(
                        f"image {rec['image_id']!r} ({rec.get('file_name', '?')}): annotation without "
                        "'segmentation' in the evaluation set; mask AP needs every GT mask"
                    )
                rle = annotation_to_rle(ann, h, w)
                out["segmentation"] = rle
                out["area"] = float(mask_utils.area(rle))
            else:
                out["area"] = bbox[2] * bbox[3]
            annotations.append(out)
    dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": name} for i, name in enumerate(classes)],
    }
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def instances_to_results(
    image_id: Any,
    boxes: torch.Tensor | np.ndarray,
    scores: torch.Tensor | np.ndarray,
    category_ids: torch.Tensor | np.ndarray,
    masks: torch.Tensor | np.ndarray | None = None,
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """COCO result dicts for one image: boxes XYXY [N,4], scores [N], 0-based category ids [N],
    and optionally mask probabilities or binary masks [N,H,W] (or [N,1,H,W]) in image coordinates."""
    boxes = np.asarray(torch.as_tensor(boxes).detach().cpu(), dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(torch.as_tensor(scores).detach().cpu(), dtype=np.float64).reshape(-1)
    cats = np.asarray(torch.as_tensor(category_ids).detach().cpu()).reshape(-1)
    rles = None
    if masks is not None:
        m = torch.as_tensor(masks).detach().cpu()
        if m.dim() == 4:
            m = m[:, 0]
        binary = (m > mask_threshold) if m.is_floating_point() else m.bool()
        arr = np.asfortranarray(binary.numpy().astype(np.uint8).transpose(1, 2, 0))
        rles = mask_utils.encode(arr) if len(boxes) else []
    results = []
    for i in range(len(boxes)):
        x0, y0, x1, y1 = boxes[i]
        res = {
            "image_id": image_id,
            "category_id": int(cats[i]),
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "score": float(scores[i]),
        }
        if rles is not None:
            res["segmentation"] = {
                "size": [int(s) for s in rles[i]["size"]],
                "counts": rles[i]["counts"].decode(),
            }
        results.append(res)
    return results


def _percent(value: float) -> float:
    # pycocotools reports -1 where no GT falls in a bucket (e.g. no small objects): NaN here.
    return float("nan") if value < 0 else 100.0 * float(value)


def evaluate_coco(
    records: Sequence[dict[str, Any]],
    results: Iterable[dict[str, Any]],
    classes: Sequence[str],
    category_ids: Sequence[int] | None = None,
    iou_types: Sequence[str] = ("segm", "bbox"),
    *,
    matches: bool = False,
) -> dict[str, float] | tuple[dict[str, float], pd.DataFrame, pd.DataFrame]:
    """COCO AP, AP50, AP75, APs, APm, APl (percent) per iou type, as `{iou_type}_{stat}`.

    `category_ids` restricts the evaluation to those categories (pycocotools `params.catIds`).
    A bucket without GT gives NaN; no detections at all gives 0 where there is GT.

    With `matches`, returns `(metrics, detections, gts)`: the per-image match tables of
    `shapeprop.eval.image_ap.matches_tables`, the rows of every iou type concatenated, from which
    `image_ap.ap_on_images` recomputes AP on any resample of the test images. Without detections
    the detections table is empty and the GT table still lists the GT and the images.
    """
    results = list(results)
    if "segm" in iou_types and any("segmentation" not in r for r in results):
        raise ValueError("mask AP requested but some detections have no 'segmentation'")
    gt = records_to_coco(records, classes, with_masks="segm" in iou_types)
    metrics: dict[str, float] = {}
    dt_tables: list[pd.DataFrame] = []
    gt_tables: list[pd.DataFrame] = []
    for iou_type in iou_types:
        if iou_type not in ("segm", "bbox"):
            raise ValueError(f"iou type {iou_type!r} is not supported (segm, bbox)")
        with contextlib.redirect_stdout(io.StringIO()):
            if not results:
                stats = _stats_without_detections(gt, category_ids)
                if matches:  # pycocotools' loadRes rejects an empty list: evaluate an empty COCO
                    ev = _evaluated(gt, _empty_results(gt), iou_type, category_ids)
            else:
                ev = _evaluated(gt, gt.loadRes([dict(r) for r in results]), iou_type, category_ids)
                ev.accumulate()
                ev.summarize()
                stats = ev.stats
        for name, value in zip(STAT_NAMES, stats[:6], strict=True):
            metrics[f"{iou_type}_{name}"] = _percent(value)
        if matches:
            dt_table, gt_table = matches_tables(ev, iou_type)
            dt_tables.append(dt_table)
            gt_tables.append(gt_table)
    if not matches:
        return metrics
    detections = pd.concat(dt_tables, ignore_index=True) if dt_tables else empty_detections()
    if detections.empty:
        detections = empty_detections()
    gts = pd.concat(gt_tables, ignore_index=True) if gt_tables else pd.DataFrame(columns=list(GT_COLUMNS))
    return metrics, detections, gts


def _evaluated(gt: COCO, dt: COCO, iou_type: str, category_ids: Sequence[int] | None) -> COCOeval:
    """A COCOeval after `evaluate()` (per-image matching), restricted to `category_ids`."""
    ev = COCOeval(gt, dt, iou_type)
    if category_ids is not None:
        ev.params.catIds = list(category_ids)
    ev.evaluate()
    return ev


def _empty_results(gt: COCO) -> COCO:
    """A results COCO without detections (what `loadRes([])` would be if it accepted it)."""
    dt = COCO()
    dt.dataset = {
        "images": list(gt.dataset["images"]),
        "categories": gt.dataset["categories"],
        "annotations": [],
    }
    dt.createIndex()
    return dt


def _stats_without_detections(gt: COCO, category_ids: Sequence[int] | None) -> list[float]:
    """What pycocotools gives without any detection: 0 where the bucket has GT, -1 otherwise."""
    cats = set(category_ids) if category_ids is not None else set(gt.getCatIds())
    areas = [a["area"] for a in gt.dataset["annotations"] if a["category_id"] in cats and not a["iscrowd"]]
    if not areas:
        return [-1.0] * 6
    # pycocotools' area ranges include both ends
    small = any(a <= 32**2 for a in areas)
    medium = any(32**2 <= a <= 96**2 for a in areas)
    large = any(a >= 96**2 for a in areas)
    return [0.0, 0.0, 0.0] + [0.0 if has else -1.0 for has in (small, medium, large)]
