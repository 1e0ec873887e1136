"""COCO evaluation against pycocotools run directly, and the best-overlap analysis on hand-made maps."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from shapeprop.eval.best_overlap import best_iou, best_overlap_table
from shapeprop.eval.coco import evaluate_coco, instances_to_results, resolve_categories

CLASSES = ["cat", "dog", "car"]


def _poly(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _records():
    rng = np.random.default_rng(0)
    records = []
    for i in range(6):
        anns = []
        for _ in range(3):
            size = rng.choice([20, 50, 110])
            x0, y0 = rng.uniform(0, 100, size=2)
            x1, y1 = x0 + size * rng.uniform(0.6, 1.0), y0 + size * rng.uniform(0.6, 1.0)
            anns.append(
                {
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "bbox_mode": 1,
                    "category_id": int(rng.integers(0, 3)),
                    "segmentation": _poly(x0, y0, x1, y1),
                    "iscrowd": 0,
                    "has_mask": True,
                }
            )
        records.append(
            {"file_name": f"{i}.png", "height": 240, "width": 260, "image_id": 10 + i, "annotations": anns}
        )
    return records


def _detections(records):
    """Perturbed GT plus false positives, as model outputs (XYXY boxes, probability masks)."""
    rng = np.random.default_rng(1)
    results = []
    for rec in records:
        boxes, scores, cats, masks = [], [], [], []
        for ann in rec["annotations"] + [
            dict(rec["annotations"][0], category_id=(rec["annotations"][0]["category_id"] + 1) % 3)
        ]:
            x, y, w, h = ann["bbox"]
            j = rng.normal(0, 0.08 * max(w, h), size=4)
            box = [x + j[0], y + j[1], x + w + j[2], y + h + j[3]]
            boxes.append(box)
            scores.append(rng.uniform(0.1, 1.0))
            cats.append(ann["category_id"])
            m = np.zeros((rec["height"], rec["width"]), dtype=np.float32)
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            m[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = rng.uniform(0.55, 1.0)
            masks.append(m)
        results += instances_to_results(
            rec["image_id"],
            torch.tensor(boxes),
            torch.tensor(scores),
            torch.tensor(cats),
            torch.tensor(np.stack(masks)),
        )
    return results


def _pycocotools_direct(tmp_path, records, results, iou_type, cat_ids=None):
    """The reference: GT and results written as JSON files, evaluated by pycocotools alone."""
    images, anns = [], []
    for rec in records:
        images.append({"id": rec["image_id"], "height": rec["height"], "width": rec["width"]})
        for a in rec["annotations"]:
            rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], rec["height"], rec["width"]))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": rec["image_id"],
                    "category_id": a["category_id"],
                    "bbox": a["bbox"],
                    "area": float(mask_utils.area(rle)),
                    "iscrowd": 0,
                    "segmentation": a["segmentation"],
                }
            )
    gt_file, dt_file = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_file.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES)],
            }
        )
    )
    dt_file.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        ev = COCOeval(gt, gt.loadRes(str(dt_file)), iou_type)
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:6]


@pytest.mark.parametrize("cat_ids", [None, [0, 2]])
def test_evaluator_equals_pycocotools(tmp_path, cat_ids):
    records = _records()
    results = _detections(records)
    metrics = evaluate_coco(records, results, CLASSES, category_ids=cat_ids)
    for iou_type in ("segm", "bbox"):
        ref = _pycocotools_direct(tmp_path, records, results, iou_type, cat_ids)
        ours = [metrics[f"{iou_type}_{k}"] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
        for a, b in zip(ours, ref, strict=True):
            if b < 0:
                assert math.isnan(a)
            else:
                assert a == pytest.approx(100 * b, abs=1e-9)
    assert 0 < metrics["segm_AP"] < 100


def test_category_subset_changes_result_and_no_detections_gives_zero():
    records = _records()
    results = _detections(records)
    all_cats = evaluate_coco(records, results, CLASSES)
    only_dog = evaluate_coco(records, results, CLASSES, category_ids=[1])
    assert all_cats["bbox_AP"] != only_dog["bbox_AP"]
    empty = evaluate_coco(records, [], CLASSES)
    assert empty["segm_AP"] == 0.0 and empty["bbox_AP50"] == 0.0


def test_resolve_categories():
    groups = {"voc": ["cat", "dog"], "nonvoc": ["car"]}
    assert resolve_categories("voc", CLASSES, groups) == [0, 1]
    assert resolve_categories(["car", "cat"], CLASSES, groups) == [0, 2]
    assert resolve_categories(None, CLASSES, groups) is None
    with pytest.raises(ValueError, match="zebra"):
        resolve_categories(["zebra"], CLASSES, groups)


def test_missing_gt_segmentation_is_named():
    records = _records()
    records[2]["annotations"][1]["segmentation"] = None
    with pytest.raises(ValueError, match="12"):
        evaluate_coco(records, [], CLASSES)


def test_best_iou_hand_computed():
    prob = np.array([[0.9, 0.6, 0.2], [0.7, 0.4, 0.1], [0.3, 0.2, 0.0]])
    gt = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=bool)
    # t=0.35..0.4 -> {0.9,0.6,0.7,0.4} = gt exactly -> IoU 1; at t=0.5 -> 3/4.
    assert best_iou(prob, gt) == 1.0
    assert best_iou(prob, gt, thresholds=[0.5]) == pytest.approx(3 / 4)
    assert best_iou(prob, gt, thresholds=[0.25]) == pytest.approx(4 / 5)  # adds the 0.3 pixel


def test_best_overlap_table_hand_computed():
    # One 20x20 image, GT square rows/cols 4..11 (8x8 = 64 px); detection box = the GT box.
    rec = {
        "image_id": 7,
        "height": 20,
        "width": 20,
        "annotations": [
            {
                "id": 3,
                "bbox": [4, 4, 8, 8],
                "bbox_mode": 1,
                "category_id": 0,
                "segmentation": _poly(4, 4, 12, 12),
                "iscrowd": 0,
            },
            {
                "id": 4,
                "bbox": [0, 14, 3, 3],
                "bbox_mode": 1,
                "category_id": 0,
                "segmentation": _poly(0, 14, 3, 17),
                "iscrowd": 0,
            },
        ],
    }
    det = {
        "boxes": torch.tensor([[4.0, 4.0, 12.0, 12.0], [15.0, 15.0, 19.0, 19.0]]),
        "saliency": torch.tensor([[[[0.8, 0.0], [0.0, 0.0]]], [[[1.0, 1.0], [1.0, 1.0]]]]),
        "shape_activation": torch.tensor([[[[0.3, 0.3], [0.3, 0.3]]], [[[0.0, 0.0], [0.0, 0.0]]]]),
    }
    table = best_overlap_table([rec], {7: det})
    assert list(table.columns) == ["image_id", "gt_id", "area", "saliency_iou", "shape_iou"]
    assert len(table) == 1  # the second GT has no detection with IoU >= 0.5
    row = table.iloc[0]
    assert (row.image_id, row.gt_id, row.area) == (7, 3, 64)
    # A constant map is scaled to 1; torchvision's paste (1 px padding, bilinear) gives, at
    # t = 0.35, rows/cols 4..12 without their 4 corner pixels (77 px): the GT (4..11) loses only its
    # corner (4, 4), so IoU = 63 / (77 + 1); every other threshold is lower (checked by hand).
    assert row.shape_iou == pytest.approx(63 / 78)
    # Saliency: only the top-left cell is hot, so the pasted map is f(y) f(x): scaled to 1, padded
    # to [0, 1, 0, 0] per axis, its box doubled to 0..16 and resized to 17 px (align_corners=False:
    # pixel i samples (8i - 13) / 34), so f = (3, 11, 19, 27, 33, 25, 17, 9, 1) / 34 at i = 2..10,
    # 0 elsewhere. At t = 0.1 (34 f(y) * 34 f(x) >= 115.6) row 3 keeps cols 3..8, rows 4..8 cols
    # 3..9 and row 9 cols 4..8: 6 + 5 * 7 + 5 = 46 px, all but row 3 and col 3 (6 + 5 px) in the GT:
    # IoU = 35 / (64 + 46 - 35) = 7 / 15. t = 0.05 gives 36 / 83, t >= 0.15 at most 31 / 74: lower.
    assert row.saliency_iou == pytest.approx(7 / 15)
    assert row.saliency_iou < row.shape_iou


def test_gt_box_mask_iou_equals_a_hand_computed_value(tmp_path, one_thread):
    """A mask branch that predicts 'everything' on a box gives IoU = mask area / box area (up to the
    box's border pixels, which the paste interpolates), and 'nothing' gives IoU 0."""
    from shapeprop.config import ModelConfig
    from shapeprop.data import catalog
    from shapeprop.eval.gt_boxes import gt_box_mask_table, mean_iou
    from shapeprop.models.build import build_detector
    from shapeprop.models.mask_branch import find_mask_branch

    ds = catalog.load("synthetic", root=tmp_path, split="val", num_images=3, image_size=64)
    records = ds.records
    records[0]["annotations"][0]["has_mask"] = False  # no mask: no row
    model = build_detector(ModelConfig(arch="mask_rcnn", backbone="tiny"), len(ds.metadata.classes), 64, 64)
    branch = find_mask_branch(model)

    def predict_constant(value):
        branch.predict = lambda features, boxes, labels, shapes: [
            {"masks": torch.full((len(b), 1, 28, 28), value)} for b in boxes
        ]
        return gt_box_mask_table(model, records, 64, 64)

    table = predict_constant(1.0)
    bounds = []
    for rec in records:
        for ann in rec["annotations"]:
            if ann["has_mask"]:
                area = mask_utils.decode(ann["segmentation"]).sum()
                x, y, w, h = ann["bbox"]  # integer here: the extent of an RLE
                bounds.append(
                    (ann["category_id"], area / ((w + 2) * (h + 2)), area / max(1, (w - 2) * (h - 2)))
                )
    assert len(table) == len(bounds) == sum(len(r["annotations"]) for r in records) - 1
    assert table["category_id"].tolist() == [c for c, _, _ in bounds]
    for iou, (_, low, high) in zip(table["iou"], bounds, strict=True):
        assert low <= iou <= high
    assert mean_iou(table) == pytest.approx(100 * table["iou"].mean())
    assert math.isnan(mean_iou(table, [99]))
    assert (predict_constant(0.0)["iou"] == 0).all()


class _RecordingDetector(torch.nn.Module):
    """Returns one box and mask covering the image in `original_sizes`, and records how it was called."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, images, original_sizes):
        (image,) = images
        self.calls.append(
            (tuple(image.shape[-2:]), list(original_sizes), self.training, torch.is_grad_enabled())
        )
        height, width = original_sizes[0]
        box = torch.tensor([[0.0, 0.0, width, height]]) + self.weight
        mask = torch.ones(1, 1, height, width)
        return [{"boxes": box, "labels": torch.tensor([2]), "scores": torch.tensor([0.9]), "masks": mask}]


def _image_records(tmp_path, sizes):
    from PIL import Image

    records = []
    for i, (height, width) in enumerate(sizes):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (width, height), (i * 40, 80, 160)).save(path)
        records.append(
            {"file_name": str(path), "height": height, "width": width, "image_id": 100 + i, "annotations": []}
        )
    return records


def test_shared_inference_loop_feeds_resized_images_and_answers_in_original_coordinates(tmp_path):
    """`model_inputs` + `detect` (the loop of `predict`, `gt_box_mask_table` and `predict_views`):
    records in order, images resized as in evaluation, the original size passed to the model, the
    model put and left in eval mode; `predict` and `predict_views` call it without gradients."""
    from shapeprop.eval.inference import detect, model_inputs, predict
    from shapeprop.visualize import predict_views

    records = _image_records(tmp_path, [(40, 60), (30, 20)])
    model = _RecordingDetector().train()
    seen = []
    for item in model_inputs(model, records, 20, 100):
        output = detect(model, item)
        seen.append((item.record["image_id"], item.target["image_id"], output["boxes"].tolist()))
    assert seen == [(100, 100, [[0, 0, 60, 40]]), (101, 101, [[0, 0, 20, 30]])]
    assert model.calls == [((20, 30), [(40, 60)], False, True), ((30, 20), [(30, 20)], False, True)]
    assert not model.training  # left in eval mode

    model.calls.clear()
    preds = predict(model.train(), records, 20, 100, warmup=2)
    assert [call[1:] for call in model.calls] == [([(40, 60)], False, False)] * 3 + [
        ([(30, 20)], False, False)
    ]
    assert [(r["image_id"], r["category_id"], r["bbox"]) for r in preds.results] == [
        (100, 1, [0, 0, 60, 40]),
        (101, 1, [0, 0, 20, 30]),
    ]
    assert preds.seconds_per_image >= 0

    model.calls.clear()
    views = predict_views(model.train(), records, ["a", "b"], 20, 100)
    assert [call[1:] for call in model.calls] == [([(40, 60)], False, False), ([(30, 20)], False, False)]
    assert [(v.image_id, v.image.shape, v.detections[0].label) for v in views] == [
        (100, (40, 60, 3), "b"),
        (101, (30, 20, 3), "b"),
    ]
    np.testing.assert_array_equal(views[0].detections[0].box, [0, 0, 60, 40])


def test_shared_inference_loop_scales_a_real_detector_back_to_the_original_image(tmp_path, one_thread):
    """A detector fed a half-size image answers through `detect` in original image coordinates:
    its boxes are those on the resized image times 2, its masks the size of the original image."""
    from shapeprop.config import ModelConfig
    from shapeprop.data import catalog
    from shapeprop.eval.inference import detect, model_inputs
    from shapeprop.models.build import build_detector

    ds = catalog.load("synthetic", root=tmp_path, split="val", num_images=1, image_size=64)
    torch.manual_seed(0)
    model = build_detector(
        ModelConfig(arch="mask_rcnn", backbone="tiny"), len(ds.metadata.classes), 32, 32, 0.0
    )
    (item,) = list(model_inputs(model, ds.records, 32, 32))
    assert tuple(item.image.shape[-2:]) == (32, 32)
    with torch.no_grad():
        output = detect(model, item)
        resized = model([item.image])[0]
    assert len(output["boxes"]) > 0
    torch.testing.assert_close(output["boxes"], resized["boxes"] * 2)
    assert tuple(output["masks"].shape[-2:]) == (64, 64)
    assert tuple(resized["masks"].shape[-2:]) == (32, 32)
