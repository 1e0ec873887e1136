"""The synthetic dataset: determinism, sanity of masks and boxes, caching and concurrent generation."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from shapeprop.data import DataError, catalog
from shapeprop.data.masks import annotation_to_mask
from shapeprop.data.synthetic import CLASSES, file_digest, load_synthetic, render_image
from shapeprop.data.synthetic_render import _rasterize, class_groups
from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from synthetic_cues import box_and_grabcut_iou  # noqa: E402

SMALL = {"num_images": 12, "image_size": 64, "seed": 3}
# render_image(0, "train", i, 96, 6) for i < 6, version 1, as generated when version 2 was added
VERSION_1_DIGEST = "3140caf28fe5d6ba0d3979fa64918aacd1cba1dccd6822f91f20496560767628"
# the same images of version 2, as generated when version 3 was added
VERSION_2_DIGEST = "2c6e6b98c9b0fc7c675c5fc587f276bac9cc4b661fb25c7363035097166c77f6"


def _render_digest(version: int) -> str:
    digest = hashlib.sha256()
    for i in range(6):
        image, annotations = render_image(0, "train", i, 96, 6, version)
        digest.update(image.tobytes() + json.dumps(annotations, sort_keys=True).encode())
    return digest.hexdigest()


def test_versions_1_and_2_render_what_they_always_rendered_and_3_differs():
    assert _render_digest(1) == VERSION_1_DIGEST
    assert _render_digest(2) == VERSION_2_DIGEST
    assert _render_digest(3) not in (VERSION_1_DIGEST, VERSION_2_DIGEST)
    assert _render_digest(3) == _render_digest(3)


def _part_colors(version: int, images: int = 40) -> tuple[list[float], float]:
    """For every object: the smallest distance (L1, RGB) between the mean colour of one of its parts
    (its 4 x 4 blocks of pixels) and the background's mean colour; and the share of background pixels
    far from that mean (clutter)."""
    closest, far = [], []
    for i in range(images):
        image, annotations = render_image(5, "train", i, 96, 6, version)
        image = image.astype(float)
        objects = np.zeros(image.shape[:2], bool)
        masks = [annotation_to_mask(a, 96, 96).astype(bool) for a in annotations]
        for mask in masks:
            objects |= mask
        background = image[~objects].mean(0)
        for mask in masks:
            blocks = [
                image[y : y + 4, x : x + 4][mask[y : y + 4, x : x + 4]].mean(0)
                for y in range(0, 96, 4)
                for x in range(0, 96, 4)
                if mask[y : y + 4, x : x + 4].all()
            ]
            if blocks:
                closest.append(min(np.abs(b - background).sum() for b in blocks))
        far.append((np.abs(image[~objects] - background).sum(1) > 150).mean())
    return closest, float(np.mean(far))


def test_version_2_objects_are_not_given_away_by_colour_contrast():
    closest_1, clutter_1 = _part_colors(1)
    closest_2, clutter_2 = _part_colors(2)
    near_1 = np.mean(np.array(closest_1) < 60)
    near_2 = np.mean(np.array(closest_2) < 60)
    assert near_1 < 0.1  # version 1: every object stands out from the background's colour
    assert near_2 > 0.3  # version 2: many have a part in the background's colours
    assert clutter_2 > clutter_1  # and the background carries object-coloured clutter


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


def test_test_images_size_the_val_and_test_splits_alone(tmp_path):
    """`test_images`: more images to evaluate on, the training set unchanged, the first ones the same."""
    train = load_synthetic(tmp_path / "t", "train", **{**SMALL, "test_images": 20})
    assert len(train.records) == SMALL["num_images"]
    val = load_synthetic(tmp_path / "v", "val", **SMALL)
    more = load_synthetic(tmp_path / "m", "val", **{**SMALL, "test_images": 20})
    assert len(more.records) == 20
    for a, b in zip(val.records, more.records[: len(val.records)], strict=True):
        assert open(a["file_name"], "rb").read() == open(b["file_name"], "rb").read()


def _box_and_grabcut_iou(version: int, images: int = 25, size: int = 96) -> tuple[float, float]:
    """Mean IoU with the GT masks of the filled GT box and of GrabCut started from it."""
    ious = [
        box_and_grabcut_iou(np.ascontiguousarray(image[..., ::-1]), ann, size, size)[1:]
        for image, annotations in (render_image(7, "train", i, size, 6, version) for i in range(images))
        for ann in annotations
    ]
    return tuple(float(v) for v in np.mean(ious, axis=0))


def test_version_3_extent_is_not_given_away_to_a_colour_model():
    """GrabCut, which fits colour models inside and outside a box, nearly recovers every version-1
    mask; on version 3 (one palette per image) it gains only a little over the filled box."""
    box_1, grabcut_1 = _box_and_grabcut_iou(1)
    box_3, grabcut_3 = _box_and_grabcut_iou(3)
    assert grabcut_1 > 0.9 and grabcut_1 - box_1 > 0.3
    assert grabcut_3 < 0.75 and grabcut_3 - box_3 < 0.2


def _period_px(image: np.ndarray, mask: np.ndarray) -> float | None:
    """The dominant period (px) of the grey-level pattern inside `mask`: the peak of the power
    spectrum of the object's box, the pixels outside the mask set to the object's mean, zero-padded
    to 64 x 64 (None for an object under 12 px across)."""
    ys, xs = np.nonzero(mask)
    if min(np.ptp(ys), np.ptp(xs)) < 12:
        return None
    box = np.s_[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    grey, inside = image[box].mean(2), mask[box]
    values = np.where(inside, grey - grey[inside].mean(), 0.0)
    power = np.abs(np.fft.fft2(values, s=(64, 64))) ** 2
    power[0, 0] = 0
    fy, fx = np.unravel_index(np.argmax(power), power.shape)
    freq = np.hypot(min(fy, 64 - fy), min(fx, 64 - fx)) / 64
    return float(1 / freq) if freq > 0 else None


def test_version_3_classes_have_patterns_of_their_own():
    """Version 3 paints each class in a pattern family and period band of its own (as each COCO
    category has its own appearance) that a box-level learner can pick up: of the two classes
    sharing a family, one is fine (period 3.5-5.5 px) and one coarse (7-10 px), measured in the
    images as the peak of each object's power spectrum."""
    periods: dict[str, list[float]] = {name: [] for name in CLASSES}
    for i in range(60):
        image, annotations = render_image(1, "train", i, 160, 6, 3)
        for a in annotations:
            period = _period_px(image.astype(float), annotation_to_mask(a, 160, 160).astype(bool))
            if period is not None:
                periods[CLASSES[a["category_id"] - 1]].append(period)
    median = {name: float(np.median(p)) for name, p in periods.items() if len(p) >= 5}
    assert len(median) >= 8, {n: len(p) for n, p in periods.items()}  # most classes measured
    # (fine, coarse) pairs of one family: stripes, checks, dots, rings, grid
    pairs = [("ellipse", "rectangle"), ("hexagon", "triangle"), ("ring", "half_disc"), ("star", "cross")]
    pairs.append(("crescent", "dumbbell"))
    for fine, coarse in pairs:
        if fine in median and coarse in median:
            assert median[fine] < 0.75 * median[coarse], (fine, coarse, median)


def _solidity(name: str) -> float:
    """Area over convex-hull area of a class's full shape."""
    mask = _rasterize(name, (100, 100), 80, 1.0, 0.0, (200, 200))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.concatenate(contours))
    return float(mask.sum() / cv2.contourArea(hull))


def test_version_3_groups_each_hold_convex_and_non_convex_shapes():
    """Versions 1 and 2 split the classes by geometry; version 3 puts both kinds in each group, so
    what a model learns about extent on one group can transfer to the other."""
    for version, mixed in ((1, False), (3, True)):
        for names in class_groups(version).values():
            convex = [_solidity(n) > 0.95 for n in names]
            assert (any(convex) and not all(convex)) == mixed, (version, names)


def test_version_3_at_160_px_has_objects_in_all_three_coco_area_ranges(tmp_path):
    dataset = load_synthetic(tmp_path, "train", num_images=60, image_size=160, version=3)
    areas = np.array(
        [
            a["area"]
            for a in json.loads((tmp_path / "annotations" / "instances_train.json").read_text())[
                "annotations"
            ]
        ]
    )
    assert len(areas) == sum(len(r["annotations"]) for r in dataset.records)
    small, large = (areas < 32**2).mean(), (areas >= 96**2).mean()
    assert small > 0.15 and 1 - small - large > 0.3 and large > 0.02
    assert dataset.metadata.class_groups == class_groups(3)


def test_version_3_defaults_to_larger_splits(tmp_path, monkeypatch):
    """2000 training and 1000 val / test images unless asked otherwise (read from the cache key)."""
    from shapeprop.data import synthetic

    asked = []
    monkeypatch.setattr(synthetic, "generate", lambda root, split, options: asked.append(options) or 1 / 0)
    for split in ("train", "val"):
        with pytest.raises(ZeroDivisionError):
            load_synthetic(tmp_path / split, split, version=3)
    assert [o["num_images"] for o in asked] == [2000, 1000]


@pytest.mark.parametrize("version", [1, 2, 3])
def test_masks_inside_boxes_and_box_is_mask_extent(tmp_path, version):
    dataset = load_synthetic(tmp_path, "train", num_images=30, image_size=64, seed=0, version=version)
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
    voc, nonvoc = class_groups(version)["voc"], class_groups(version)["nonvoc"]
    assert dataset.metadata.class_groups == {"voc": voc, "nonvoc": nonvoc}
    assert not set(voc) & set(nonvoc) and sorted(voc + nonvoc) == sorted(CLASSES)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_objects_are_partly_occluded_but_stay_visible(tmp_path, version):
    dataset = load_synthetic(tmp_path, "train", num_images=30, image_size=64, seed=1, version=version)
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
    with pytest.raises(DataError, match=r"options.version.*unknown generator version 4.*\(1, 2, 3\)"):
        catalog.load("synthetic", tmp_path, version=4)


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
