"""GrabCut pseudo masks (cached), on real image files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import shapeprop.models.baselines.grabcut as grabcut
from shapeprop.data import catalog
from shapeprop.data.masks import annotation_to_mask

pytestmark = pytest.mark.usefixtures("one_thread")


def test_grabcut_segments_a_disc_in_its_box():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, size=(120, 140, 3), dtype=np.uint8)  # dark noisy background
    disc = np.zeros((120, 140), np.uint8)
    cv2.circle(disc, (70, 60), 25, 1, -1)
    image[disc > 0] = (40, 200, 230)
    mask = grabcut.grabcut_box(image, [40, 30, 61, 61])
    iou = (mask & disc).sum() / (mask | disc).sum()
    assert iou > 0.85
    box_iou = disc.sum() / (61 * 61)  # what the filled-box fallback would score
    assert iou > box_iou + 0.1


def _box_only(records, every=2):
    """Records in which every `every`-th annotation loses its mask."""
    out = []
    for rec in records:
        anns = [dict(a, has_mask=(i % every != 0)) for i, a in enumerate(rec["annotations"])]
        out.append(dict(rec, annotations=anns))
    return out


def test_grabcut_pseudo_masks_are_cached(tmp_path, monkeypatch):
    records = _box_only(
        catalog.load("synthetic", root=tmp_path / "d", split="train", num_images=3, image_size=64).records
    )
    jobs = []
    compute = grabcut._image_masks
    monkeypatch.setattr(grabcut, "_image_masks", lambda job: jobs.append(job[0]) or compute(job))
    labelled = grabcut.grabcut_pseudo_masks(records, "fp", cache_dir=tmp_path / "cache", workers=1)
    cache = tmp_path / "cache" / "fp.json"
    assert cache.is_file()
    assert len(jobs) == 3  # each image has a box-only annotation
    for before, after in zip(records, labelled, strict=True):
        for a, b in zip(before["annotations"], after["annotations"], strict=True):
            assert b["has_mask"]
            if a["has_mask"]:
                assert b is a  # real masks untouched
            else:
                assert b["pseudo_mask"]
                mask = annotation_to_mask(b, after["height"], after["width"])
                x, y, w, h = a["bbox"]  # whole pixels in the synthetic data
                assert mask.sum() > 0
                # inside its box on all four sides
                assert not mask[: int(y)].any() and not mask[int(y + h) :].any()
                assert not mask[:, : int(x)].any() and not mask[:, int(x + w) :].any()
    # Second call: everything comes from the cache; GrabCut does not run and the cache is not rewritten.
    jobs.clear()
    stamp = (cache.stat().st_ino, cache.stat().st_mtime_ns)  # a rewrite renames a new file into place
    again = grabcut.grabcut_pseudo_masks(records, "fp", cache_dir=tmp_path / "cache", workers=1)
    assert again == labelled and jobs == [] and (cache.stat().st_ino, cache.stat().st_mtime_ns) == stamp
    # One more box-only annotation: only its image is computed, the others keep their cached masks.
    records[1]["annotations"][1] = dict(records[1]["annotations"][1], has_mask=False)
    third = grabcut.grabcut_pseudo_masks(records, "fp", cache_dir=tmp_path / "cache", workers=1)
    assert jobs == [records[1]["file_name"]]
    assert third[0] == labelled[0] and third[2] == labelled[2]
    assert third[1]["annotations"][1]["pseudo_mask"]
