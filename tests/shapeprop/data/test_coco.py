"""COCO loader on a small real-format file: polygons, RLE, crowd, contiguous ids, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shapeprop.data import DataError, MissingDataError, catalog
from shapeprop.data.masks import annotation_to_mask, annotation_to_rle
from tests.helpers.data_factories import write_coco


def test_records_follow_the_file(tmp_path):
    truth = write_coco(tmp_path)
    dataset = catalog.load("coco_2017", tmp_path, "val")
    meta = dataset.metadata
    assert meta.classes == ["person", "car", "dog", "giraffe"]  # ids 1, 3, 18, 25 -> 0..3
    assert meta.class_groups == {"voc": ["person", "car", "dog"], "nonvoc": ["giraffe"]}
    assert meta.name == "coco_2017" and len(meta.fingerprint) == 64
    assert [r["image_id"] for r in dataset.records] == [7, 9]
    data = json.loads(truth["json"].read_text())
    file_cat = {a["id"]: a["category_id"] for a in data["annotations"]}
    for record in dataset.records:
        assert record["file_name"].endswith(f"val2017/{record['image_id']:012d}.jpg")
        assert (record["height"], record["width"]) == (48, 64)
        for ann in record["annotations"]:
            assert ann["bbox_mode"] == 1 and ann["has_mask"]
            assert meta.classes[ann["category_id"]] == next(
                c["name"] for c in truth["categories"] if c["id"] == file_cat[ann["id"]]
            )
            assert ann["iscrowd"] == int(ann["id"] in truth["crowd_ids"])
            mask = annotation_to_mask(ann, 48, 64)
            assert np.array_equal(mask, truth["masks"][ann["id"]])
            assert int(annotation_to_rle(ann, 48, 64)["size"][0]) == 48
    crowd = next(a for r in dataset.records for a in r["annotations"] if a["iscrowd"])
    assert isinstance(crowd["segmentation"]["counts"], list)  # kept as uncompressed RLE


def test_fingerprint_is_the_annotation_content(tmp_path):
    write_coco(tmp_path / "a")
    write_coco(tmp_path / "b")
    a = catalog.load("coco_2017", tmp_path / "a", "val").metadata.fingerprint
    assert a == catalog.load("coco_2017", tmp_path / "b", "val").metadata.fingerprint
    path = tmp_path / "b" / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["bbox"][0] += 1
    path.write_text(json.dumps(data))
    assert a != catalog.load("coco_2017", tmp_path / "b", "val").metadata.fingerprint


def test_bad_input_names_path_key_problem(tmp_path, monkeypatch):
    with pytest.raises(MissingDataError, match="nowhere: COCO root not found"):
        catalog.load("coco_2017", tmp_path / "nowhere")
    monkeypatch.delenv("SHAPEPROP_DATA", raising=False)
    with pytest.raises(DataError, match="needs a root"):
        catalog.load("coco_2017")
    with pytest.raises(DataError, match="unknown dataset 'cocoa'"):
        catalog.load("cocoa", tmp_path)
    truth = write_coco(tmp_path)
    path = truth["json"]
    text = path.read_text()
    with pytest.raises(MissingDataError, match="instances_train2017.json: annotation file not found"):
        catalog.load("coco_2017", tmp_path, "train")
    path.write_text(text[: len(text) // 2])
    with pytest.raises(DataError, match="instances_val2017.json: malformed JSON at line 1.*truncated"):
        catalog.load("coco_2017", tmp_path, "val")
    data = json.loads(text)
    data["annotations"][2]["category_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"annotations\[2\].category_id: unknown category id 99"):
        catalog.load("coco_2017", tmp_path, "val")
    data = json.loads(text)
    del data["images"][1]["height"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"images\[1\].height: missing key"):
        catalog.load("coco_2017", tmp_path, "val")
    path.write_text(text)
    (tmp_path / "val2017" / "000000000009.jpg").unlink()
    with pytest.raises(MissingDataError, match="1 image.*000000000009.jpg"):
        catalog.load("coco_2017", tmp_path, "val")
