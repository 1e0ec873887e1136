"""Baselines: GrabCut pseudo masks (cached) and progressive self-training, on real image files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.detection.roi_heads import paste_masks_in_image

import shapeprop.models.baselines.grabcut as grabcut
from shapeprop.config import DataConfig, ExperimentConfig, ModelConfig, ScheduleConfig
from shapeprop.data import catalog
from shapeprop.data.masks import annotation_to_mask
from shapeprop.engine.train import load_model_weights
from shapeprop.models.baselines.box_masks import box_pseudo_masks
from shapeprop.models.baselines.progressive import progressive_pseudo_masks
from shapeprop.models.build import build_detector

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


def test_box_pseudo_masks_are_the_filled_boxes():
    """Box-only instances get exactly their box's pixels (XYWH or XYXY boxes, fractional corners
    rounded outwards); real masks and crowds stay as they were."""
    box_only = {"bbox": [2.0, 3.0, 4.0, 2.0], "has_mask": False, "category_id": 0, "iscrowd": 0}
    xyxy = {"bbox": [1.5, 0.0, 3.2, 2.0], "bbox_mode": 0, "has_mask": False, "category_id": 1, "iscrowd": 0}
    real = {
        "bbox": [0.0, 0.0, 2.0, 2.0],
        "has_mask": True,
        "segmentation": [[0, 0, 2, 0, 2, 2]],
        "iscrowd": 0,
    }
    crowd = {"bbox": [0.0, 0.0, 2.0, 2.0], "has_mask": False, "iscrowd": 1}
    (rec,) = box_pseudo_masks([{"height": 8, "width": 10, "annotations": [box_only, xyxy, real, crowd]}])
    first, second, kept, kept_crowd = rec["annotations"]
    expected = np.zeros((8, 10), np.uint8)
    expected[3:5, 2:6] = 1
    np.testing.assert_array_equal(annotation_to_mask(first, 8, 10), expected)
    expected = np.zeros((8, 10), np.uint8)
    expected[0:2, 1:4] = 1  # x from 1.5 down to 1, up from 3.2 to 4
    np.testing.assert_array_equal(annotation_to_mask(second, 8, 10), expected)
    assert first["has_mask"] and first["pseudo_mask"] and second["pseudo_mask"]
    assert kept is real and kept_crowd is crowd


def _stage1_masks(model, rec) -> np.ndarray:
    """Binary masks [N, H, W] of `model`'s mask branch on `rec`'s GT boxes and classes (at 64 px
    the network input is the image itself)."""
    image = np.asarray(Image.open(rec["file_name"]).convert("RGB"), np.float32).transpose(2, 0, 1) / 255
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in rec["annotations"])])
    labels = torch.tensor([a["category_id"] + 1 for a in rec["annotations"]])
    with torch.no_grad():
        probs = model.masks_on_boxes(torch.from_numpy(image), boxes, labels)
    return (paste_masks_in_image(probs, boxes, (rec["height"], rec["width"]))[:, 0] > 0.5).numpy()


def test_progressive_trains_stage1_and_labels_box_only_instances(tmp_path):
    root = tmp_path / "d"
    records = catalog.load("synthetic", root=root, split="train", num_images=6, image_size=64).records
    # Image-wise semi-supervision: images 0-2 keep their masks, images 3-5 only have boxes.
    records = [
        dict(r, annotations=[dict(a, has_mask=i < 3) for a in r["annotations"]])
        for i, r in enumerate(records)
    ]
    cfg = ExperimentConfig(
        data=DataConfig(root=str(root), min_size=64, max_size=64, num_workers=0),
        model=ModelConfig(backbone="tiny", pseudo_masks="progressive"),
        schedule=ScheduleConfig(max_steps=2, batch_size=2, warmup_steps=0, milestones=[], checkpoint_every=5),
    )

    def build():
        return build_detector(cfg.model, 10, 64, 64)

    seen = []

    class Seen:
        def on_metrics(self, metrics, step):
            seen.append((step, sorted(metrics)))

    stage = tmp_path / "stage1"
    labelled = progressive_pseudo_masks(cfg, records, build, stage, Seen(), progress=False, log_every=1)
    assert (stage / "checkpoints" / "last.ckpt").is_file() and (stage / "pseudo_masks.json").is_file()
    assert [s for s, _ in seen] == [1, 2] and "stage1_loss_mask" in seen[0][1]
    # The stage-1 model as saved, run on each box-only instance's GT box and class.
    stage1 = build()
    load_model_weights(stage1, stage / "checkpoints" / "last.ckpt")
    stage1.eval()
    for i, rec in enumerate(labelled):
        if i < 3:  # annotated: their ground truth, untouched
            assert rec["annotations"] == records[i]["annotations"]
            continue
        assert all(a["has_mask"] and a["pseudo_mask"] for a in rec["annotations"])
        got = np.stack([annotation_to_mask(a, rec["height"], rec["width"]) for a in rec["annotations"]])
        expected = _stage1_masks(stage1, records[i])
        # The same computation gives the same masks; a model that did not come out of stage 1
        # (a fresh one) or a mask from elsewhere (hidden GT, filled box) disagrees on 0.5 % or more.
        assert (got != expected).mean() < 1e-3, i
    # Cached: a second call returns the same records without training again.
    torch.manual_seed(123)
    assert progressive_pseudo_masks(cfg, records, build, stage, progress=False) == labelled
