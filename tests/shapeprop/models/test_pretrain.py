"""The tiny backbone's ImageNet stand-in: crop classification on the synthetic `pretrain` split, cached."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shapeprop.data.synthetic import CLASSES
from shapeprop.models import pretrain
from shapeprop.models.backbones import build_backbone, load_body_weights
from shapeprop.models.tiny import TinyNet

SMALL = {"num_images": 30, "steps": 80, "batch_size": 32, "lr": 0.05}


def test_crops_are_labelled_objects_of_a_split_no_experiment_uses():
    options = {**pretrain.DEFAULTS, "num_images": 5}
    crops, labels = pretrain.object_crops(options)
    assert crops.dtype.name == "uint8" and crops.shape[1:] == (32, 32, 3)
    assert len(crops) == len(labels) >= 5
    assert labels.min() >= 0 and labels.max() < len(CLASSES)
    assert pretrain.SPLIT not in ("train", "val", "test")
    assert crops.std() > 5  # real image content, not padding


def test_the_version_option_reaches_the_renderer():
    """Pretraining on another generator version renders that version (the option used to be dropped)."""
    v1 = pretrain.object_crops({**pretrain.DEFAULTS, "num_images": 2}, processes=1)[0]
    v3 = pretrain.object_crops({**pretrain.DEFAULTS, "num_images": 2, "version": 3}, processes=1)[0]
    assert v1.shape != v3.shape or not np.array_equal(v1, v3)
    again = pretrain.object_crops({**pretrain.DEFAULTS, "num_images": 2}, processes=1)[0]
    np.testing.assert_array_equal(v1, again)


def test_crops_rendered_in_processes_equal_the_serial_ones():
    options = {**pretrain.DEFAULTS, "num_images": 7}
    serial = pretrain.object_crops(options, processes=1)
    parallel = pretrain.object_crops(options, processes=2, chunk=3)  # 3 chunks, the last one short
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)


def test_pretraining_learns_and_is_cached(tmp_path, one_thread):
    path = pretrain.pretrained_tiny_weights(tmp_path, progress=False, **SMALL)
    saved = torch.load(path, map_location="cpu", weights_only=False)
    # 80 steps on ~100 crops: far above the 10% of chance on the crops it trained on.
    assert saved["accuracy"]["train"] > 0.5
    assert saved["options"]["steps"] == 80
    mtime = path.stat().st_mtime_ns
    assert pretrain.pretrained_tiny_weights(tmp_path, progress=False, **SMALL) == path
    assert path.stat().st_mtime_ns == mtime  # second call: from the cache, not trained again
    body = TinyNet()
    load_body_weights(body, path)
    torch.testing.assert_close(body.state_dict()["stage1.0.weight"], saved["state_dict"]["stage1.0.weight"])
    with pytest.raises(ValueError, match="unknown options"):
        pretrain.pretrained_tiny_weights(tmp_path, stpes=3)


def test_synthetic_pretrained_is_for_the_tiny_backbone_only():
    with pytest.raises(ValueError, match="only for the tiny backbone"):
        build_backbone("resnet18", "synthetic-pretrained", [1, 2, 3, 4], None)
