"""BDD100K loaders on a small tree (RGBA bitmasks, RLE JSON, Scalabel det_20 JSON) written by the test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shapeprop.data import DataError, MissingDataError, catalog
from shapeprop.data.bdd100k import DET_CLASSES, INS_SEG_CLASSES
from shapeprop.data.masks import annotation_to_mask
from tests.helpers.data_factories import write_bdd100k


@pytest.fixture
def bdd(tmp_path):
    return {"root": tmp_path, **write_bdd100k(tmp_path)}


def check_ins_seg(records, truth):
    assert [r["image_id"] for r in records] == sorted(truth)
    for record in records:
        assert (record["height"], record["width"]) == (36, 64)
        assert (
            record["file_name"].endswith(f"images/10k/train/{record['image_id']}.jpg")
            or "/val/" in record["file_name"]
        )
        instances = sorted(
            truth[record["image_id"]], key=lambda i: (INS_SEG_CLASSES.index(i["category"]), i["ann_id"])
        )
        anns = sorted(record["annotations"], key=lambda a: (a["category_id"], a["bbox"]))
        assert len(anns) == len(instances)
        by_mask = {annotation_to_mask(a, 36, 64).tobytes(): a for a in anns}
        for inst in instances:
            ann = by_mask[inst["mask"].astype(np.uint8).tobytes()]
            assert INS_SEG_CLASSES[ann["category_id"]] == inst["category"]
            assert ann["iscrowd"] == int(inst.get("crowd", 0)) and ann["has_mask"]
            ys, xs = np.nonzero(inst["mask"])
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]


@pytest.mark.parametrize("label_format", ["bitmasks", "rles"])
def test_ins_seg_both_formats(bdd, label_format):
    dataset = catalog.load("bdd100k_ins_seg", bdd["root"], "train", label_format=label_format)
    assert dataset.metadata.classes == INS_SEG_CLASSES
    check_ins_seg(dataset.records, bdd["ins_seg"]["train"])
    val = catalog.load("bdd100k_ins_seg", bdd["root"], "val", label_format=label_format)
    check_ins_seg(val.records, bdd["ins_seg"]["val"])


def test_det_boxes_and_categories(bdd):
    dataset = catalog.load("bdd100k_det", bdd["root"], "train")
    assert dataset.metadata.classes == DET_CLASSES
    records = {r["image_id"]: r for r in dataset.records}
    assert sorted(records) == ["bbb", "ccc", "ddd"] and records["ddd"]["annotations"] == []
    ccc = records["ccc"]
    assert (ccc["height"], ccc["width"]) == (36, 64) and ccc["file_name"].endswith(
        "images/100k/train/ccc.jpg"
    )
    got = [
        (DET_CLASSES[a["category_id"]], a["bbox"], a["iscrowd"], a["has_mask"]) for a in ccc["annotations"]
    ]
    assert got == [
        ("car", [2.0, 3.0, 19.5, 13.0], 0, False),  # inclusive corners: width x2 - x1 + 1
        ("traffic light", [30.0, 2.0, 4.0, 8.0], 0, False),
        ("car", [40.0, 10.0, 21.0, 21.0], 1, False),  # "other vehicle" -> ignored car
        ("pedestrian", [5.0, 20.0, 5.0, 15.0], 1, False),  # crowd attribute
    ]


def test_det_2018_release_names(bdd):
    root = bdd["root"]
    (root / "labels" / "det_20" / "det_train.json").unlink()
    frames = [{"name": "ccc.jpg", "labels": [
        {"category": "bike", "box2d": {"x1": 0, "y1": 0, "x2": 9, "y2": 9}},
        {"category": "motor", "box2d": {"x1": 0, "y1": 0, "x2": 9, "y2": 9}},
        {"category": "person", "box2d": {"x1": 0, "y1": 0, "x2": 9, "y2": 9}},
        {"category": "drivable area", "poly2d": [{"vertices": [[0, 0], [5, 5], [0, 5]]}]}]}]  # fmt: skip
    (root / "labels" / "bdd100k_labels_images_train.json").write_text(json.dumps(frames))
    record = catalog.load("bdd100k_det", root, "train").records[0]
    assert [DET_CLASSES[a["category_id"]] for a in record["annotations"]] == [
        "bicycle",
        "motorcycle",
        "pedestrian",
    ]


def test_fused_set(bdd):
    fused = catalog.load("bdd100k_fused", bdd["root"], "train")
    assert fused.metadata.classes == INS_SEG_CLASSES
    records = {r["image_id"]: r for r in fused.records}
    assert sorted(records) == ["aaa", "bbb", "ccc", "ddd"]
    # bbb is in both sets: its instance-segmentation labels (a bus with a mask) win
    assert [(INS_SEG_CLASSES[a["category_id"]], a["has_mask"]) for a in records["bbb"]["annotations"]] == [
        ("bus", True)
    ]
    assert records["bbb"]["file_name"].endswith("10k/train/bbb.jpg")
    ccc = [(INS_SEG_CLASSES[a["category_id"]], a["has_mask"]) for a in records["ccc"]["annotations"]]
    assert ccc == [("car", False), ("car", False), ("pedestrian", False)]  # traffic light left out
    assert sum(a["has_mask"] for r in fused.records for a in r["annotations"]) == 4
    val = catalog.load("bdd100k_fused", bdd["root"], "val")
    assert [r["image_id"] for r in val.records] == ["vvv"]
    ins = catalog.load("bdd100k_ins_seg", bdd["root"], "train").metadata.fingerprint
    assert fused.metadata.fingerprint != ins


def test_bad_input(bdd):
    root = bdd["root"]
    with pytest.raises(MissingDataError, match="BDD100K root not found"):
        catalog.load("bdd100k_det", root / "nope")
    det = root / "labels" / "det_20" / "det_train.json"
    frames = json.loads(det.read_text())
    frames[1]["labels"][0]["category"] = "spaceship"
    det.write_text(json.dumps(frames))
    with pytest.raises(
        DataError, match=r"det_train.json: frames\[1\].labels\[0\].category: unknown category 'spaceship'"
    ):
        catalog.load("bdd100k_det", root, "train")
    frames[1]["labels"][0] = {"category": "car", "box2d": {"x1": 0}}
    det.write_text(json.dumps(frames))
    with pytest.raises(DataError, match=r"frames\[1\].labels\[0\].box2d: expected numbers"):
        catalog.load("bdd100k_det", root, "train")
    (root / "images" / "10k" / "train" / "aaa.jpg").unlink()
    with pytest.raises(MissingDataError, match="aaa.jpg"):
        catalog.load("bdd100k_ins_seg", root, "train")
    with pytest.raises(DataError, match="label_format.*'polygons'"):
        catalog.load("bdd100k_ins_seg", root, "val", label_format="polygons")
    (root / "labels" / "ins_seg" / "rles" / "ins_seg_val.json").write_text(
        '{"frames": [{"name": "vvv.jpg", "lab'
    )
    with pytest.raises(DataError, match="ins_seg_val.json: malformed JSON"):
        catalog.load("bdd100k_ins_seg", root, "val")


def test_bitmasks_decoded_in_worker_processes_match(bdd, monkeypatch):
    from shapeprop.data import bdd100k

    serial = catalog.load("bdd100k_ins_seg", bdd["root"], "train", label_format="bitmasks").records
    monkeypatch.setattr(bdd100k, "_workers", lambda n: 2)
    parallel = catalog.load("bdd100k_ins_seg", bdd["root"], "train", label_format="bitmasks").records
    assert parallel == serial
