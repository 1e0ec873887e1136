"""The synthetic dataset: determinism, sanity of masks and boxes, caching and concurrent generation."""

from __future__ import annotations

import json
import multiprocessing as mp

import numpy as np
import pytest
from PIL import Image

from shapeprop.data import DataError, catalog
from shapeprop.data.masks import annotation_to_mask
from shapeprop.data.synthetic import CLASS_GROUPS, CLASSES, file_digest, load_synthetic

SMALL = {"num_images": 12, "image_size": 64, "seed": 3}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    load_synthetic(tmp_path / "a", "train", **SMALL)
    load_synthetic(tmp_path / "b", "train", **SMALL)
    load_synthetic(tmp_path / "c", "train", **{**SMALL, "seed": 4})
    assert file_digest(tmp_path / "a", "train") == file_digest(tmp_path / "b", "train")
    assert file_digest(tmp_path / "a", "train") != file_digest(tmp_path / "c", "train")


def test_train_and_val_differ_and_growing_keeps_images(tmp_path):
    small = load_synthetic(tmp_path / "s", "train", **SMALL)
    big = load_synthetic(tmp_path / "b", "train", **{**SMALL, "num_images": 20})
    val = load_synthetic(tmp_path / "s", "val", **SMALL)
    for a, b in zip(small.records, big.records[:12], strict=True):
        assert open(a["file_name"], "rb").read() == open(b["file_name"], "rb").read()
        assert a["image_id"] == b["image_id"] and a["annotations"] == b["annotations"]
    assert open(small.records[0]["file_name"], "rb").read() != open(val.records[0]["file_name"], "rb").read()


def test_masks_inside_boxes_and_box_is_mask_extent(tmp_path):
    dataset = load_synthetic(tmp_path, "train", num_images=30, image_size=64, seed=0)
    seen = set()
    counts = []
    for record in dataset.records:
        image = np.asarray(Image.open(record["file_name"]))
        assert image.shape == (64, 64, 3) and (record["height"], record["width"]) == (64, 64)
        counts.append(len(record["annotations"]))
        union = np.zeros((64, 64), int)
        for ann in record["annotations"]:
            mask = annotation_to_mask(ann, 64, 64)
            ys, xs = np.nonzero(mask)
            assert len(xs) >= 24
            x, y, w, h = ann["bbox"]
            assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())
            assert ann["has_mask"] and not ann["iscrowd"]
            union += mask
            seen.add(ann["category_id"])
        assert union.max() <= 1  # visible masks never overlap
    assert 1 <= min(counts) and max(counts) <= 6 and len(set(counts)) >= 3
    assert len(seen) >= 8
    assert dataset.metadata.classes == CLASSES
    assert set(dataset.metadata.class_groups) == {"voc", "nonvoc"}
    voc, nonvoc = CLASS_GROUPS["voc"], CLASS_GROUPS["nonvoc"]
    assert not set(voc) & set(nonvoc) and sorted(voc + nonvoc) == sorted(CLASSES)


def test_objects_are_partly_occluded_but_stay_visible(tmp_path):
    dataset = load_synthetic(tmp_path, "train", num_images=30, image_size=64, seed=1)
    data = json.loads((tmp_path / "annotations" / "instances_train.json").read_text())
    visible = np.array([a["area"] / a["full_area"] for a in data["annotations"]])
    assert (visible < 0.95).sum() >= 3  # occlusion happens
    assert visible.min() >= 0.5  # but never hides more than half an object
    assert len(data["annotations"]) == sum(len(r["annotations"]) for r in dataset.records)


def test_cache_dir_keyed_by_options(tmp_path, monkeypatch):
    monkeypatch.setenv("SHAPEPROP_DATA", str(tmp_path))
    a = catalog.load("synthetic", split="val", **SMALL)
    b = catalog.load("synthetic", split="val", **{**SMALL, "image_size": 48})
    assert a.metadata.root != b.metadata.root
    assert a.metadata.root.parent == tmp_path / "synthetic"
    assert a.metadata.fingerprint != b.metadata.fingerprint
    again = catalog.load("synthetic", split="val", **SMALL)
    assert again.metadata.fingerprint == a.metadata.fingerprint and again.records == a.records


def test_root_with_other_options_is_an_error(tmp_path):
    load_synthetic(tmp_path, "train", **SMALL)
    with pytest.raises(DataError, match="instances_train.json.*generated with"):
        load_synthetic(tmp_path, "train", **{**SMALL, "seed": 9})


def test_bad_options(tmp_path):
    with pytest.raises(DataError, match="unknown option.*'num_imgs'"):
        catalog.load("synthetic", tmp_path, num_imgs=3)
    with pytest.raises(DataError, match="image_size"):
        catalog.load("synthetic", tmp_path, image_size=8)
    with pytest.raises(DataError, match="unknown split"):
        catalog.load("synthetic", tmp_path, split="holdout")


def _generate(root):
    load_synthetic(root, "train", **SMALL)


def test_racing_processes_leave_a_complete_set(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_generate, args=(tmp_path / "race",)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    load_synthetic(tmp_path / "ref", "train", **SMALL)
    assert file_digest(tmp_path / "race", "train") == file_digest(tmp_path / "ref", "train")
    assert not [p for p in (tmp_path / "race").iterdir() if p.name.startswith(".tmp")]
