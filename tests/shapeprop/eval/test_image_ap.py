"""COCO AP recomputed from per-image match tables, against pycocotools' COCOeval run directly on
the same images (all of them, a subset, one duplicated), and the tables of evaluate_coco."""

from __future__ import annotations

import contextlib
import copy
import io
import math

import numpy as np
import pandas as pd
import pytest
from pycocotools.cocoeval import COCOeval

from shapeprop.eval.coco import evaluate_coco, records_to_coco
from shapeprop.eval.image_ap import (
    DETECTION_COLUMNS,
    GT_COLUMNS,
    ap_on_images,
    at_iou_threshold,
    image_ids,
    matches_tables,
)
from tests.helpers.coco_eval import CLASSES, _detections, _records

AREAS = {"all": 0, "small": 3, "medium": 4, "large": 5}  # area range -> index in COCOeval.stats


@pytest.fixture(scope="module")
def data():
    records = _records()
    return records, _detections(records)


def _cocoeval(records, results, iou_type, img_ids=None, cat_ids=None):
    """pycocotools alone on these GT and detections."""
    gt = records_to_coco(records, CLASSES)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes([dict(r) for r in results]), iou_type)
        if img_ids is not None:
            ev.params.imgIds = list(img_ids)
        if cat_ids is not None:
            ev.params.catIds = list(cat_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.fixture(scope="module")
def tables(data):
    records, results = data
    parts = [matches_tables(_cocoeval(records, results, t), t) for t in ("segm", "bbox")]
    return (
        pd.concat([p[0] for p in parts], ignore_index=True),
        pd.concat([p[1] for p in parts], ignore_index=True),
    )


def _assert_stats(ours, stats):
    for area, index in AREAS.items():
        ref = stats[index]
        if ref < 0:
            assert math.isnan(ours[area])
        else:
            assert ours[area] == pytest.approx(100 * ref, abs=1e-9), area


def _ap(tables, weights, iou_type, cat_ids=None):
    dt, gt = tables
    return {area: ap_on_images(dt, gt, weights, iou_type, area, cat_ids)[0] for area in AREAS}


def test_tables_layout(data, tables):
    records, results = data
    dt, gt = tables
    assert tuple(dt.columns) == DETECTION_COLUMNS and tuple(gt.columns) == GT_COLUMNS
    assert list(image_ids(gt)) == [r["image_id"] for r in records]
    image_set = gt[gt["category_id"] == -1]
    assert len(image_set) == 2 * len(records) and (image_set["num_gt"] == 0).all()
    all_segm = dt[(dt["area"] == "all") & (dt["iou_type"] == "segm")]
    counts = pd.Series([(r["image_id"], r["category_id"]) for r in results]).value_counts()
    assert counts.max() > 100 and len(all_segm) == counts.clip(upper=100).sum()  # top 100 per image, class
    assert dt["matched"].between(0, 1023).all() and dt["ignored"].between(0, 1023).all()
    # the crowd region makes ignored GT: counted as GT rows but not in num_gt
    crowd = gt[(gt["image_id"] == 15) & (gt["category_id"] == 1) & (gt["area"] == "all")]
    n_dog = sum(a["category_id"] == 1 and not a["iscrowd"] for a in records[5]["annotations"])
    assert crowd["num_gt"].tolist() == [n_dog, n_dog]


@pytest.mark.parametrize("cat_ids", [None, [0, 2], [1]])
@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_all_images_equal_cocoeval(data, tables, iou_type, cat_ids):
    records, results = data
    ev = _cocoeval(records, results, iou_type, cat_ids=cat_ids)
    _assert_stats(_ap(tables, np.ones(len(records), dtype=int), iou_type, cat_ids), ev.stats)
    assert 0 < ev.stats[0] < 1 and min(ev.stats[3:6]) > 0  # every area range has GT and detections


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_one_iou_threshold_equals_cocoeval_ap50_ap75(data, tables, iou_type):
    records, results = data
    ev = _cocoeval(records, results, iou_type)
    dt, gt = tables
    weights = np.ones(len(records), dtype=int)
    for index, stat in ((0, 1), (5, 2)):  # AP50 is stats[1], AP75 stats[2]
        ours = ap_on_images(at_iou_threshold(dt, index), gt, weights, iou_type)[0]
        assert ours == pytest.approx(100 * ev.stats[stat], abs=1e-9)
    assert ev.stats[1] > ev.stats[2] > 0  # the thresholds differ on these detections
    with pytest.raises(ValueError, match="not in 0..9"):
        at_iou_threshold(dt, 10)


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_tied_scores_in_pycocotools_order(data, iou_type):
    """Scores tied within and across images: pycocotools' order (image order, then its order in
    the image) decides the precision at a tie; the tables and ap_on_images keep it."""
    records, results = data
    tied = [dict(r, score=round(r["score"], 1)) for r in results]
    ev = _cocoeval(records, tied, iou_type)
    dt, gt = matches_tables(ev, iou_type)
    ids = image_ids(gt)
    for keep in (np.ones(len(ids), dtype=bool), np.arange(len(ids)) % 3 != 1):
        ev = _cocoeval(records, tied, iou_type, img_ids=ids[keep].tolist())
        _assert_stats(_ap((dt, gt), keep.astype(int), iou_type), ev.stats)


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_image_subsets_equal_cocoeval_on_img_ids(data, tables, iou_type):
    records, results = data
    ids = image_ids(tables[1])
    rng = np.random.default_rng(2)
    for keep in [
        np.arange(len(ids)) % 2 == 0,
        np.arange(len(ids)) == 3,
        *(rng.uniform(size=(3, len(ids))) < 0.5),
    ]:
        if not keep.any():
            continue
        ev = _cocoeval(records, results, iou_type, img_ids=ids[keep].tolist())
        _assert_stats(_ap(tables, keep.astype(int), iou_type), ev.stats)
    # no image at all: no GT anywhere
    assert np.isnan(ap_on_images(*tables, np.zeros((1, len(ids)), dtype=int), iou_type))[0]


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
@pytest.mark.parametrize("which", [0, 5, 7])
def test_weight_two_equals_a_duplicated_image(data, tables, iou_type, which):
    records, results = data
    image_id = records[which]["image_id"]
    copy_id = 1000
    dup_records = records + [dict(copy.deepcopy(records[which]), image_id=copy_id)]
    dup_results = results + [dict(r, image_id=copy_id) for r in results if r["image_id"] == image_id]
    ev = _cocoeval(dup_records, dup_results, iou_type)
    weights = np.ones(len(records), dtype=int)
    weights[which] = 2
    _assert_stats(_ap(tables, weights, iou_type), ev.stats)


def test_vectorised_over_resamples(tables):
    dt, gt = tables
    n = len(image_ids(gt))
    rng = np.random.default_rng(3)
    weights = rng.multinomial(n, np.full(n, 1 / n), size=25)
    weights[0] = 0
    for iou_type, area in [("segm", "all"), ("bbox", "small"), ("segm", "large")]:
        together = ap_on_images(dt, gt, weights, iou_type, area)
        one_by_one = np.array([ap_on_images(dt, gt, w[None], iou_type, area)[0] for w in weights])
        np.testing.assert_allclose(together, one_by_one, rtol=0, atol=1e-12)
        assert np.isnan(together[0]) and len(np.unique(together[1:])) > 5
        if area == "all":
            assert np.isfinite(together[1:]).all()


def test_evaluate_coco_tables_round_trip_csv(tmp_path, data):
    records, results = data
    metrics, dt, gt = evaluate_coco(records, results, CLASSES, matches=True)
    assert metrics == evaluate_coco(records, results, CLASSES)
    assert set(dt["iou_type"]) == set(gt["iou_type"]) == {"segm", "bbox"}
    dt.to_csv(tmp_path / "coco_matches.csv", index=False)
    gt.to_csv(tmp_path / "coco_gt.csv", index=False)
    dt2, gt2 = pd.read_csv(tmp_path / "coco_matches.csv"), pd.read_csv(tmp_path / "coco_gt.csv")
    pd.testing.assert_frame_equal(dt, dt2, check_dtype=False)  # object or str columns
    pd.testing.assert_frame_equal(gt, gt2, check_dtype=False)
    for table in (dt, dt2, gt, gt2):
        assert {table.dtypes[c] for c in table.columns if c not in ("iou_type", "area", "score")} == {
            np.dtype(np.int64)
        }
    ones = np.ones(len(records), dtype=int)
    for iou_type in ("segm", "bbox"):
        for area, name in [("all", "AP"), ("small", "APs"), ("medium", "APm"), ("large", "APl")]:
            ap = ap_on_images(dt2, gt2, ones, iou_type, area)[0]
            assert ap == pytest.approx(metrics[f"{iou_type}_{name}"], abs=1e-9)

    subset = [0, 2]
    metrics, dt, gt = evaluate_coco(records, results, CLASSES, category_ids=subset, matches=True)
    assert set(dt["category_id"]) == {0, 2} and set(gt["category_id"]) == {-1, 0, 2}
    assert ap_on_images(dt, gt, ones, "bbox")[0] == pytest.approx(metrics["bbox_AP"], abs=1e-9)


def test_evaluate_coco_tables_without_detections(data):
    records, _ = data
    metrics, dt, gt = evaluate_coco(records, [], CLASSES, matches=True)
    assert tuple(dt.columns) == DETECTION_COLUMNS and dt.empty
    assert dt.dtypes["score"] == np.float64 and dt.dtypes["matched"] == np.int64
    n_gt = sum(not a["iscrowd"] for r in records for a in r["annotations"])
    assert gt[(gt["iou_type"] == "segm") & (gt["area"] == "all")]["num_gt"].sum() == n_gt
    assert list(image_ids(gt)) == [r["image_id"] for r in records]
    assert ap_on_images(dt, gt, np.ones(len(records), dtype=int), "segm")[0] == metrics["segm_AP"] == 0.0
