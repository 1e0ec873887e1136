"""The training / evaluation DataLoader path: resizing, flips, masks, crowd handling, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from shapeprop.config import DataConfig
from shapeprop.data import DataError, MissingDataError
from shapeprop.data.coco import load_coco_2017
from shapeprop.data.loading import DetectionDataset, collate, make_loader, resized_shape
from shapeprop.data.masks import annotation_to_mask
from shapeprop.data.synthetic import load_synthetic
from tests.helpers.data_factories import write_coco


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return load_synthetic(tmp_path_factory.mktemp("syn"), "train", num_images=10, image_size=64, seed=0)


def test_resized_shape():
    assert resized_shape(480, 640, 800, 1333) == (800, 1067, 800 / 480)
    assert resized_shape(100, 1000, 800, 1333)[:2] == (133, 1333)  # long side capped
    assert resized_shape(64, 64, 64, 100) == (64, 64, 1.0)


def test_item_contents_match_the_record(tmp_path):
    truth = write_coco(tmp_path)
    record = next(r for r in load_coco_2017(tmp_path, "val").records if r["image_id"] == 9)
    image, target = DetectionDataset([record], 96, 200, hflip=False, train=True)[0]
    assert (
        image.dtype == torch.float32 and image.shape == (3, 96, 128) and 0 <= image.min() <= image.max() <= 1
    )
    source = np.asarray(Image.open(record["file_name"]).convert("RGB").resize((128, 96), Image.BILINEAR))
    assert torch.allclose(image, torch.from_numpy(source.copy()).permute(2, 0, 1).float() / 255)
    kept = [a for a in record["annotations"] if not a["iscrowd"]]  # the crowd region is left out
    assert len(kept) == 2 and target["labels"].tolist() == [a["category_id"] + 1 for a in kept]
    assert target["scale"] == 2.0 and target["orig_size"] == (48, 64) and target["image_id"] == 9
    assert target["masks"].shape == (2, 96, 128) and target["masks"].dtype == torch.uint8
    for mask, box, ann in zip(target["masks"], target["boxes"], kept, strict=True):
        expected = (
            torch.from_numpy(annotation_to_mask(ann, 48, 64)).repeat_interleave(2, 0).repeat_interleave(2, 1)
        )
        assert (mask != expected).float().mean() < 0.01
        x, y, w, h = ann["bbox"]
        assert box.tolist() == [2 * x, 2 * y, 2 * (x + w), 2 * (y + h)]
    assert truth["masks"][3].sum() * 4 == pytest.approx(target["masks"][0].sum().item(), rel=0.02)


def test_polygon_masks_rasterised_at_target_resolution(tmp_path):
    write_coco(tmp_path)
    record = next(r for r in load_coco_2017(tmp_path, "val").records if r["image_id"] == 7)
    _, target = DetectionDataset([record], 192, 400, hflip=False, train=False)[0]
    triangle = target["masks"][0].numpy()
    # the polygon (5,5)-(30,5)-(5,30) scaled by 4: area 0.5 * 100 * 100 pixels, a sharp hypotenuse
    assert abs(int(triangle.sum()) - 5000) < 150
    assert triangle[20:120, 20:120].sum() == triangle.sum()


def test_flip_mirrors_image_boxes_and_masks(synthetic):
    record = next(r for r in synthetic.records if len(r["annotations"]) >= 2)
    dataset = DetectionDataset([record], 64, 64, hflip=True, train=True)
    image, target = dataset[(0, False)]
    flipped, flipped_target = dataset[(0, True)]
    assert torch.equal(flipped, image.flip(-1))
    assert torch.equal(flipped_target["masks"], target["masks"].flip(-1))
    x1, y1, x2, y2 = target["boxes"].unbind(1)
    assert torch.equal(flipped_target["boxes"], torch.stack([64 - x2, y1, 64 - x1, y2], 1))
    for mask, box in zip(flipped_target["masks"], flipped_target["boxes"], strict=True):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    # evaluation never flips
    eval_image, _ = DetectionDataset([record], 64, 64, hflip=True, train=False)[(0, True)]
    assert torch.equal(eval_image, image)


def test_masks_zero_where_has_mask_false(synthetic):
    record = next(r for r in synthetic.records if len(r["annotations"]) >= 2)
    record = {
        **record,
        "annotations": [{**a, "has_mask": i % 2 == 0} for i, a in enumerate(record["annotations"])],
    }
    _, target = DetectionDataset([record], 64, 64, hflip=False, train=True)[0]
    assert target["has_mask"].tolist() == [i % 2 == 0 for i in range(len(record["annotations"]))]
    assert (target["masks"].flatten(1).sum(1) > 0).tolist() == target["has_mask"].tolist()


def batches(loader):
    return [(torch.stack(images), [t["image_id"] for t in targets], [t["boxes"] for t in targets])
            for images, targets in loader]  # fmt: skip


def test_make_loader_seeded_and_worker_independent(synthetic):
    cfg = DataConfig(min_size=64, max_size=64, num_workers=0)
    a = batches(make_loader(synthetic.records, cfg, train=True, batch_size=4, seed=1))
    b = batches(make_loader(synthetic.records, cfg.model_copy(update={"num_workers": 2}), True, 4, seed=1))
    c = batches(make_loader(synthetic.records, cfg, train=True, batch_size=4, seed=2))
    assert len(a) == 2  # 10 images, batch 4, last partial batch dropped
    for (ia, ida, ba), (ib, idb, bb) in zip(a, b, strict=True):
        assert (
            ida == idb and torch.equal(ia, ib) and all(torch.equal(x, y) for x, y in zip(ba, bb, strict=True))
        )
    assert [x[1] for x in a] != [x[1] for x in c]
    loader = make_loader(synthetic.records, cfg, train=True, batch_size=4, seed=1)
    epoch1, epoch2 = [x[1] for x in batches(loader)], [x[1] for x in batches(loader)]
    assert epoch1 != epoch2  # reshuffled every epoch


def test_eval_loader_in_order_every_image(synthetic):
    cfg = DataConfig(min_size=32, max_size=64, num_workers=0)
    ids = [
        i
        for _, targets in make_loader(synthetic.records, cfg, False, 3, 0)
        for i in (t["image_id"] for t in targets)
    ]
    assert ids == [r["image_id"] for r in synthetic.records]


def test_collate_keeps_sizes():
    items = [(torch.zeros(3, 4, 5), {"a": 1}), (torch.zeros(3, 6, 5), {"a": 2})]
    images, targets = collate(items)
    assert [i.shape[1] for i in images] == [4, 6] and targets == [{"a": 1}, {"a": 2}]


def test_bad_images_named(tmp_path, synthetic):
    missing = {**synthetic.records[0], "file_name": str(tmp_path / "gone.png")}
    with pytest.raises(MissingDataError, match="gone.png"):
        DetectionDataset([missing], 64, 64, False, False)[0]
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png: unreadable image"):
        DetectionDataset([{**missing, "file_name": str(tmp_path / "bad.png")}], 64, 64, False, False)[0]
    wrong = {**synthetic.records[0], "width": 65}
    with pytest.raises(DataError, match="64x64 but its record says 65x64"):
        DetectionDataset([wrong], 64, 64, False, False)[0]
