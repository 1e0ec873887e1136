"""COCO AP recomputed on any multiset of test images, from per-image match tables.

COCO AP is not a mean over images: per category and IoU threshold, pycocotools' `accumulate()`
pools the detections of all images, sorts them by score and integrates a precision envelope. To
bootstrap over test images, each run therefore stores what `COCOeval.evaluate()` matched, per
(area range, category, image) (`matches_tables`), and `ap_on_images` redoes `accumulate()` +
`stats[0]` on resamples of those images, all resamples at once.

Tables (both carry `iou_type` so the segm and bbox rows of a run can share one file):

- detections: `iou_type, area, image_id, category_id, score, matched, ignored`, one row per
  detection that `evaluateImg` kept (the top `maxDets[-1]` = 100 by score per image and category)
  per area range; `matched` / `ignored` are bit masks over the 10 IoU thresholds (bit t set when
  `dtMatches[t] != 0` / `dtIgnore[t]`). Rows are in `evalImgs` order (within an image: score
  descending, ties in pycocotools' order), which `ap_on_images` relies on for tied scores.
- GT: `iou_type, area, image_id, category_id, num_gt`, one row per (area range, category, image)
  with at least one GT; `num_gt` counts the GT not ignored (pycocotools' `npig`). Every evaluated
  image (`params.imgIds`) also has a row `area='all', category_id=-1, num_gt=0`, so that an image
  without GT or detections still belongs to the image set (`image_ids`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

DETECTION_COLUMNS = ("iou_type", "area", "image_id", "category_id", "score", "matched", "ignored")
GT_COLUMNS = ("iou_type", "area", "image_id", "category_id", "num_gt")
NUM_THRESHOLDS = 10  # pycocotools' params.iouThrs: 0.5:0.05:0.95
REC_THRS = np.linspace(0.0, 1.0, 101)  # pycocotools' params.recThrs
IMAGE_SET_CATEGORY = -1  # category_id of the GT rows that list the evaluated images
#: The tables' names as a run's artifacts (`<name>.csv`), where a report finds them.
MATCHES_TABLE, GT_TABLE = "coco_matches", "coco_gt"


def empty_detections() -> pd.DataFrame:
    """A detections table without rows, with the columns and dtypes of `matches_tables`."""
    return _detections_frame([], [], [], [], [], [], [])


def _detections_frame(iou_type, area, image_id, category_id, score, matched, ignored) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "iou_type": pd.Series(iou_type, dtype="str"),
            "area": pd.Series(area, dtype="str"),
            "image_id": pd.Series(image_id, dtype=np.int64 if not len(image_id) else None),
            "category_id": pd.Series(category_id, dtype=np.int64),
            "score": pd.Series(score, dtype=np.float64),
            "matched": pd.Series(matched, dtype=np.int64),
            "ignored": pd.Series(ignored, dtype=np.int64),
        }
    )


def matches_tables(ev: Any, iou_type: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(detections, GT) tables of a `pycocotools.cocoeval.COCOeval` after `evaluate()`.

    Read from `ev.evalImgs` (one entry per category, area range and image; None where the image
    has neither GT nor detections of the category) and `ev.params`. Detection rows of an area
    range other than 'all' that are ignored and unmatched at every threshold (detections outside
    the range) are left out: they add neither a true nor a false positive, so they cannot change
    AP. See the module docstring for the columns.
    """
    p = ev.params
    if len(p.iouThrs) != NUM_THRESHOLDS:
        raise ValueError(f"matches_tables expects {NUM_THRESHOLDS} IoU thresholds, got {len(p.iouThrs)}")
    labels = {tuple(rng): lbl for rng, lbl in zip(p.areaRng, p.areaRngLbl, strict=True)}
    bits = np.left_shift(1, np.arange(NUM_THRESHOLDS, dtype=np.int64))
    all_bits = int(bits.sum())
    dt: dict[str, list] = {k: [] for k in ("area", "image_id", "category_id", "score", "matched", "ignored")}
    gt: dict[str, list] = {k: [] for k in ("area", "image_id", "category_id", "num_gt")}
    for e in ev.evalImgs:
        if e is None:
            continue
        area = labels[tuple(e["aRng"])]
        gt_ignore = np.asarray(e["gtIgnore"]).reshape(-1)
        if len(gt_ignore):
            gt["area"].append(area)
            gt["image_id"].append(e["image_id"])
            gt["category_id"].append(e["category_id"])
            gt["num_gt"].append(int(np.count_nonzero(gt_ignore == 0)))
        scores = np.asarray(e["dtScores"], dtype=np.float64)
        if not len(scores):
            continue
        matched = (np.asarray(e["dtMatches"]) != 0).T.astype(np.int64) @ bits
        ignored = np.asarray(e["dtIgnore"]).astype(bool).T.astype(np.int64) @ bits
        if area != "all":
            keep = (matched != 0) | (ignored != all_bits)
            scores, matched, ignored = scores[keep], matched[keep], ignored[keep]
        n = len(scores)
        dt["area"] += [area] * n
        dt["image_id"] += [e["image_id"]] * n
        dt["category_id"] += [e["category_id"]] * n
        dt["score"].append(scores)
        dt["matched"].append(matched)
        dt["ignored"].append(ignored)
    n_dt = len(dt["area"])
    detections = _detections_frame(
        [iou_type] * n_dt,
        dt["area"],
        dt["image_id"],
        dt["category_id"],
        np.concatenate(dt["score"]) if dt["score"] else [],
        np.concatenate(dt["matched"]) if dt["matched"] else [],
        np.concatenate(dt["ignored"]) if dt["ignored"] else [],
    )
    images = list(p.imgIds)
    gts = pd.DataFrame(
        {
            "iou_type": iou_type,
            "area": gt["area"] + ["all"] * len(images),
            "image_id": gt["image_id"] + images,
            "category_id": pd.Series(gt["category_id"] + [IMAGE_SET_CATEGORY] * len(images), dtype=np.int64),
            "num_gt": pd.Series(gt["num_gt"] + [0] * len(images), dtype=np.int64),
        },
        columns=list(GT_COLUMNS),
    )
    return detections, gts


def at_iou_threshold(detections: pd.DataFrame, index: int) -> pd.DataFrame:
    """The detections table as if every IoU threshold were threshold `index` (0: IoU 0.5, 5: 0.75),
    so that `ap_on_images` on it is the AP at that one threshold (COCOeval's stats[1] for index 0,
    stats[2] for 5, at area 'all')."""
    if not 0 <= index < NUM_THRESHOLDS:
        raise ValueError(f"IoU threshold index {index} is not in 0..{NUM_THRESHOLDS - 1}")
    every = (1 << NUM_THRESHOLDS) - 1
    return detections.assign(
        matched=np.right_shift(detections["matched"].to_numpy(np.int64), index) % 2 * every,
        ignored=np.right_shift(detections["ignored"].to_numpy(np.int64), index) % 2 * every,
    )


def image_ids(gts: pd.DataFrame) -> np.ndarray:
    """The evaluated images, sorted (pycocotools sorts `params.imgIds` the same way): the column
    order of the `weights` of `ap_on_images`."""
    return np.unique(gts["image_id"].to_numpy())


def ap_on_images(
    detections: pd.DataFrame,
    gts: pd.DataFrame,
    weights: np.ndarray,
    iou_type: str = "segm",
    area: str = "all",
    category_ids: Sequence[int] | None = None,
) -> np.ndarray:
    """COCO AP (percent, at maxDets 100) on R resamples of the test images: an array [R].

    `weights` [R, n_images] (a 1-D array is one resample) says how many times each image of
    `image_ids(gts)` is drawn: all ones is the original set (AP equals `COCOeval.stats[0]`, or
    stats[3..5] for area 'small'/'medium'/'large'), 0/1 a subset (as `params.imgIds`), and an
    image drawn k times counts k times, as in a dataset holding k copies of it. `category_ids`
    restricts the categories (as `params.catIds`).

    This is pycocotools' `accumulate()`: per category and IoU threshold, the detections of all
    images are sorted by score descending (a stable mergesort over their concatenation in image
    order), true and false positives (ignored detections count as neither) are summed
    cumulatively, here weighted by the draw count of their image; recall = tp / npig, precision =
    tp / (tp + fp + eps), made non-increasing from the right, read at the first recall >= each of
    the 101 recall thresholds (0 past the last). AP averages over thresholds and over the
    categories with GT in the resample (pycocotools' -1 are left out); NaN where no category has
    GT. Detections of weight-0 images and ignored ones stay in the sequence as steps of zero: they
    repeat the previous point, which changes neither the envelope nor the first recall reaching a
    threshold, so the result is as if they were dropped. One difference with a dataset that really
    duplicates an image: each detection's copies sit next to each other here, while pycocotools
    places the copied image by its new id, which matters only for tied scores (with distinct
    scores both orders are the same).
    """
    weights = np.atleast_2d(np.asarray(weights))
    images = image_ids(gts)
    if weights.shape[1] != len(images):
        raise ValueError(f"weights has {weights.shape[1]} columns for {len(images)} images")
    if (weights < 0).any() or (weights != np.round(weights)).any():
        raise ValueError("weights are draw counts: non-negative integers")
    weights = weights.astype(np.float64)
    n_rep = weights.shape[0]
    dt = detections[(detections["iou_type"] == iou_type) & (detections["area"] == area)]
    gt = gts[
        (gts["iou_type"] == iou_type) & (gts["area"] == area) & (gts["category_id"] != IMAGE_SET_CATEGORY)
    ]
    cats = np.unique(np.concatenate([dt["category_id"].to_numpy(), gt["category_id"].to_numpy()]))
    if category_ids is not None:
        cats = np.intersect1d(cats, np.asarray(list(category_ids)))
    dt_cat = dt["category_id"].to_numpy()
    dt_img = np.searchsorted(images, dt["image_id"].to_numpy())
    dt_score = dt["score"].to_numpy(dtype=np.float64)
    dt_matched = dt["matched"].to_numpy(dtype=np.int64)
    dt_ignored = dt["ignored"].to_numpy(dtype=np.int64)
    gt_cat = gt["category_id"].to_numpy()
    gt_img = np.searchsorted(images, gt["image_id"].to_numpy())
    gt_num = gt["num_gt"].to_numpy(dtype=np.float64)
    for table, pos in ((dt, dt_img), (gt, gt_img)):
        if len(pos) and not np.array_equal(images[np.minimum(pos, len(images) - 1)], table["image_id"]):
            raise ValueError("the detections or GT name images missing from the image set of gts")

    ap_sum = np.zeros(n_rep)
    n_cats = np.zeros(n_rep)
    for cat in cats:
        per_image = np.zeros(len(images))
        np.add.at(per_image, gt_img[gt_cat == cat], gt_num[gt_cat == cat])
        npig = weights @ per_image  # [R]
        rows = np.flatnonzero(dt_cat == cat)
        # pycocotools: concatenate the images' detections in image order, then a stable sort by score
        rows = rows[np.argsort(dt_img[rows], kind="mergesort")]
        rows = rows[np.argsort(-dt_score[rows], kind="mergesort")]
        ap = _category_ap(weights, npig, dt_img[rows], dt_matched[rows], dt_ignored[rows])
        has_gt = npig > 0
        ap_sum[has_gt] += ap[has_gt]
        n_cats += has_gt
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_cats > 0, 100.0 * ap_sum / n_cats, np.nan)


def _category_ap(
    weights: np.ndarray, npig: np.ndarray, img: np.ndarray, matched: np.ndarray, ignored: np.ndarray
) -> np.ndarray:
    """Mean interpolated precision over IoU and recall thresholds of one category, per resample
    [R] (meaningless where npig is 0); detections already in pycocotools' order.

    Only the true positives of each threshold are visited: recall grows only at them, so the
    first recall >= a threshold is at one of them, and after a true positive precision only falls
    until the next one, so the envelope at a true positive is the maximum over the later true
    positives. tp and fp counts there are those of the full sequence, so precision and recall are
    the same floats as pycocotools'. Rows of true positives are padded to one length with points
    of precision 0 that no recall threshold reaches ("0 past the last point").
    """
    n_rep, n_dt, n_thr, n_rec = len(weights), len(img), NUM_THRESHOLDS, len(REC_THRS)
    bits = np.left_shift(1, np.arange(n_thr, dtype=np.int64))[:, None]
    counted = (ignored[None, :] & bits) == 0  # [T, D]: neither tp nor fp where ignored
    tp = counted & ((matched[None, :] & bits) != 0)
    uniq_counted, u_of_t = np.unique(counted, axis=0, return_inverse=True)  # usually one row
    u_of_t = u_of_t.reshape(-1)
    n_tp = tp.sum(axis=1)
    width = int(n_tp.max()) + 1  # at least one pad column
    idx = np.full((n_thr, width), n_dt)  # positions of each threshold's tps; pads point at column D
    t_of, col = np.nonzero(tp)
    idx[t_of, np.arange(len(col)) - np.repeat(np.cumsum(n_tp) - n_tp, n_tp)] = col
    pad = idx == n_dt
    counted_pad = np.concatenate([uniq_counted, np.zeros((len(uniq_counted), 1), bool)], axis=1)
    out = np.empty(n_rep)
    chunk = max(1, 2_000_000 // (n_thr * width + len(uniq_counted) * n_dt))  # bounds the memory
    for start in range(0, n_rep, chunk):
        w = weights[start : start + chunk][:, img]  # [r, D]
        r = len(w)
        w = np.concatenate([w, np.zeros((r, 1))], axis=1)  # column D: the pads, weight 0
        n_counted = np.cumsum(w[:, None, :] * counted_pad[None], axis=2)  # [r, U, D+1]
        tp_sum = np.cumsum(w[:, idx], axis=2)  # [r, T, width]
        fp_sum = n_counted[:, u_of_t[:, None], idx] - tp_sum
        with np.errstate(invalid="ignore", divide="ignore"):
            rc = tp_sum / npig[start : start + r, None, None]
        pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
        pr[:, pad] = 0.0
        # the precision envelope (running max from the right), kept reversed: index width-1-i is point i
        envelope = np.maximum.accumulate(pr[:, :, ::-1], axis=2).reshape(r * n_thr, width)
        # pycocotools reads pr at searchsorted(rc, recThrs, 'left'), the first rc >= threshold j.
        # Exactly, in integers: k = number of thresholds <= rc is non-decreasing along a row and
        # rc >= thr_j <=> k > j, so that index is the number of points with k <= j: per row, a
        # cumulative histogram of k (pads get k = n_rec + 1 > every j).
        k = np.searchsorted(REC_THRS, rc.reshape(-1), side="right").reshape(r * n_thr, width)
        k[np.broadcast_to(pad, (r, n_thr, width)).reshape(r * n_thr, width)] = n_rec + 1
        k += np.arange(r * n_thr)[:, None] * (n_rec + 2)
        hist = np.bincount(k.reshape(-1), minlength=r * n_thr * (n_rec + 2)).reshape(r * n_thr, n_rec + 2)
        pos = np.cumsum(hist[:, :n_rec], axis=1)  # [r*T, n_rec], always < width
        q = np.take_along_axis(envelope, width - 1 - pos, axis=1)
        out[start : start + r] = q.reshape(r, n_thr * n_rec).mean(axis=1)
    return out
