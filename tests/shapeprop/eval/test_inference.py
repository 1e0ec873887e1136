"""The shared inference loop: resized images in, answers in the original coordinates."""

from __future__ import annotations

import numpy as np
import torch


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
