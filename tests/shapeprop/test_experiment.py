"""`run_experiment` end to end on the synthetic set: train, evaluate, kill and resume, re-evaluate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from shapeprop.config import DataConfig, EvalConfig, ExperimentConfig, ModelConfig, ScheduleConfig
from shapeprop.experiment import ExperimentCallbacks, run_experiment

pytestmark = pytest.mark.usefixtures("one_thread")


METRICS = [f"{t}_{s}" for t in ("segm", "bbox") for s in ("AP", "AP50", "AP75", "APs", "APm", "APl")]


def _config(root: Path, **model) -> ExperimentConfig:
    return ExperimentConfig(
        seed=1,
        data=DataConfig(
            root=str(root),
            options={"num_images": 8, "image_size": 64},
            min_size=64,
            max_size=64,
            num_workers=0,
        ),
        model=ModelConfig(backbone="tiny", **model),
        schedule=ScheduleConfig(
            max_steps=6, batch_size=2, lr=0.01, warmup_steps=1, milestones=[3], checkpoint_every=2
        ),
        eval=EvalConfig(max_images=2),
    )


class Recorder(ExperimentCallbacks):
    def __init__(self, crash_at: int | None = None):
        self.starts, self.metrics, self.checkpoints, self.evals = [], [], [], []
        self.crash_at = crash_at

    def on_start(self, max_steps, start_step):
        self.starts.append((max_steps, start_step))

    def on_metrics(self, metrics, step):
        self.metrics.append((step, metrics))
        if step == self.crash_at:
            raise RuntimeError("killed")

    def on_checkpoint(self, path, step):
        self.checkpoints.append((path.name, step))

    def on_eval(self, metrics):
        self.evals.append(metrics)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_run_resume_and_reevaluate(tmp_path):
    cfg = _config(tmp_path / "data")

    straight = Recorder()
    result = run_experiment(cfg, tmp_path / "straight", straight, progress=False, log_every=1)
    assert set(METRICS + ["infer_s_per_img", "train_s_per_step"]) <= set(result.metrics)
    assert all(0 <= result.metrics[m] <= 100 for m in METRICS if not math.isnan(result.metrics[m]))
    assert result.metrics["infer_s_per_img"] > 0 and result.metrics["train_s_per_step"] > 0
    assert straight.starts == [(6, 0)]
    assert [s for s, _ in straight.metrics] == [1, 2, 3, 4, 5, 6]
    first = straight.metrics[0][1]
    assert {
        "loss",
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
        "lr",
    } <= set(first)
    assert first["lr"] == pytest.approx(0.01 * 0.001)  # warm-up starts at lr * warmup_factor
    assert straight.metrics[3][1]["lr"] == pytest.approx(0.001)  # after the milestone at step 3
    assert ("step_0000002.ckpt", 2) in straight.checkpoints and ("last.ckpt", 6) in straight.checkpoints
    assert _checkpoint_files(tmp_path / "straight") == ["last.ckpt", "step_0000004.ckpt", "step_0000006.ckpt"]
    assert straight.evals == [result.metrics]
    saved = json.loads(result.artifacts["evaluation"].read_text())
    assert saved["step"] == 6 and saved["fingerprint"] == result.fingerprint and result.fingerprint
    assert result.artifacts["checkpoint"] == tmp_path / "straight" / "checkpoints" / "last.ckpt"
    assert result.param_counts["total"] > result.param_counts["mask_head"] > 0
    assert result.param_counts["shapeprop"] == 0

    # Killed during step 3 (after the step-2 checkpoint), then run again: resumes at step 2 and,
    # 6 steps of 2 of the 8 images being more than one pass, runs into the second pass over the data.
    killed = Recorder(crash_at=3)
    with pytest.raises(RuntimeError, match="killed"):
        run_experiment(cfg, tmp_path / "resumed", killed, progress=False, log_every=1)
    resumed = Recorder()
    again = run_experiment(cfg, tmp_path / "resumed", resumed, progress=False, log_every=1)
    assert resumed.starts == [(6, 2)]
    assert [s for s, _ in resumed.metrics] == [3, 4, 5, 6]
    # the first attempt's step-2 checkpoint is pruned too: the newest two stay
    assert _checkpoint_files(tmp_path / "resumed") == ["last.ckpt", "step_0000004.ckpt", "step_0000006.ckpt"]
    for (_, a), (_, b) in zip(straight.metrics[2:], resumed.metrics, strict=True):
        assert a["loss"] == b["loss"]
    w1 = _weights(result.artifacts["checkpoint"])
    w2 = _weights(again.artifacts["checkpoint"])
    assert w1.keys() == w2.keys()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    same = [m for m in METRICS if not math.isnan(result.metrics[m])]
    assert [again.metrics[m] for m in same] == [result.metrics[m] for m in same]

    # A finished run only evaluates again: no training step, same metrics.
    rerun = Recorder()
    third = run_experiment(cfg, tmp_path / "straight", rerun, progress=False, log_every=1)
    assert rerun.starts == [(6, 6)] and rerun.metrics == []
    assert [third.metrics[m] for m in same] == [result.metrics[m] for m in same]
    assert third.metrics["train_s_per_step"] == result.metrics["train_s_per_step"]


def _checkpoint_files(workdir: Path) -> list[str]:
    return sorted(p.name for p in (workdir / "checkpoints").iterdir())


@pytest.mark.parametrize(
    ("keep", "files"),
    [(0, ["last.ckpt"]), (-1, ["last.ckpt", "step_0000002.ckpt", "step_0000004.ckpt", "step_0000006.ckpt"])],
)
def test_keep_checkpoints_none_or_all(tmp_path, keep, files):
    cfg = _config(tmp_path / "data")
    cfg = cfg.model_copy(update={"schedule": cfg.schedule.model_copy(update={"keep_checkpoints": keep})})
    run_experiment(cfg, tmp_path / "w", progress=False)
    assert _checkpoint_files(tmp_path / "w") == files


def test_best_overlap_without_shapeprop_is_refused(tmp_path):
    cfg = _config(tmp_path / "data").model_copy(update={"eval": EvalConfig(best_overlap=True)})
    with pytest.raises(ValueError, match="best_overlap"):
        run_experiment(cfg, tmp_path / "w", progress=False)


def test_shapeprop_run_reports_best_overlap_on_a_category_subset(tmp_path, monkeypatch):
    from shapeprop import experiment
    from shapeprop.config import ShapePropConfig
    from shapeprop.eval.best_overlap import best_overlap_table

    delivered = {}

    def spy(records, maps):  # the real analysis, on the maps the run hands it
        delivered.update(maps)
        return best_overlap_table(records, maps)

    monkeypatch.setattr(experiment, "best_overlap_table", spy)
    cfg = _config(
        tmp_path / "data", shapeprop=ShapePropConfig(latent_channels=8, prior_channels=8, hidden_channels=16)
    )
    cfg = cfg.model_copy(
        update={
            "schedule": cfg.schedule.model_copy(update={"max_steps": 2}),
            "eval": EvalConfig(max_images=3, best_overlap=True, categories="voc", score_threshold=0.0),
        }
    )
    result = run_experiment(cfg, tmp_path / "w", progress=False)
    # Every test image hands its 100 detections' saliency and shape activation to the analysis.
    assert len(delivered) == 3
    for maps in delivered.values():
        assert maps["boxes"].shape == (100, 4)
        assert maps["saliency"].shape == maps["shape_activation"].shape == (100, 1, 14, 14)
        assert 0 <= float(maps["shape_activation"].min()) <= float(maps["shape_activation"].max()) <= 1
    table = pd.read_csv(result.tables["best_overlap"])
    assert list(table.columns) == ["image_id", "gt_id", "area", "saliency_iou", "shape_iou"]
    assert table[["saliency_iou", "shape_iou"]].stack().between(0, 1).all()
    assert (
        result.tables["best_overlap"].read_text().splitlines()[0]
        == "image_id,gt_id,area,saliency_iou,shape_iou"
    )
    assert result.param_counts["shapeprop"] > 0
    saved = json.loads(result.artifacts["evaluation"].read_text())
    assert saved["categories"] == ["ellipse", "rectangle", "triangle", "hexagon", "half_disc"]


def test_resume_identity_names_clip_grad_norm_only_when_it_clips():
    """Checkpoints written before `schedule.clip_grad_norm` existed lack it: a run that does not clip
    still resumes them, one that clips does not."""
    from shapeprop.config import checkpoint_identity

    plain = checkpoint_identity(ExperimentConfig())
    assert "clip_grad_norm" not in plain["schedule"]
    clipped = checkpoint_identity(ExperimentConfig(schedule=ScheduleConfig(clip_grad_norm=5.0)))
    assert clipped["schedule"] == plain["schedule"] | {"clip_grad_norm": 5.0}
