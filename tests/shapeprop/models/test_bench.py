"""The detector benchmark: its operator and sync counts, and that ShapeProp adds no host sync."""

from __future__ import annotations

import pytest

from shapeprop.config import ShapePropConfig
from shapeprop.models.bench import main, run_benchmark
from shapeprop.models.op_counts import format_counts

pytestmark = pytest.mark.usefixtures("one_thread")

SP = ShapePropConfig(hidden_channels=16, latent_channels=8, prior_channels=8)


@pytest.mark.parametrize("arch,rois", [("mask_rcnn", None), ("mask_rcnn", 8), ("retinamask", None)])
def test_shapeprop_adds_no_host_sync_to_a_training_step(arch, rois, tmp_path):
    r = run_benchmark(
        arch,
        size=64,
        batch_size=2,
        steps=0,
        images=0,
        warmup=1,
        shapeprop=SP,
        shapeprop_rois_per_image=rois,
        data_root=tmp_path,
        count=True,
    )
    assert r["syncs_plain"] > 0  # the detector itself syncs (RPN, samplers, RoIAlign levels)
    assert r["syncs_shapeprop"] == r["syncs_plain"], format_counts(r["counts"])
    assert r["ops_shapeprop"] > r["ops_plain"] + 50  # the head's operators are seen
    assert "train_ratio" not in r and "infer_ratio" not in r


def test_benchmark_command_line_times_and_counts(tmp_path, capsys):
    r = main(
        [
            "--size",
            "64",
            "--batch",
            "2",
            "--steps",
            "1",
            "--images",
            "1",
            "--warmup",
            "1",
            "--count",
            "--hidden",
            "8",
        ]
    )
    out = capsys.readouterr().out
    assert r["train_ratio"] > 0 and r["infer_ratio"] > 0
    assert "train s/step" in out and "infer s/img" in out and "syncing operators" in out
    assert r["params_shapeprop"] > r["params_plain"]


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["mask_rcnn", "retinamask"])
def test_shapeprop_adds_no_cuda_sync_on_the_gpu(arch, tmp_path):
    r = run_benchmark(
        arch,
        size=128,
        batch_size=2,
        steps=0,
        images=0,
        warmup=2,
        device="cuda",
        shapeprop=SP,
        shapeprop_rois_per_image=16,
        data_root=tmp_path,
        count=True,
    )
    assert r["cuda_syncs_plain"] > 0
    # ShapeProp adds none; it may avoid one of torchvision's (it pools another set of RoIs).
    assert r["cuda_syncs_shapeprop"] <= r["cuda_syncs_plain"], format_counts(r["counts"])
