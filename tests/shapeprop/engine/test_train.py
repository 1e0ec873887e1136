"""Training with the Lightning engine: NaN losses, gradient clipping, resume identity, trainer
settings, reduced precision on the CPU and the GPU."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from shapeprop.config import DataConfig, ModelConfig, ScheduleConfig, ShapePropConfig
from shapeprop.data import catalog
from shapeprop.data.loading import DetectionDataset
from shapeprop.engine import train
from shapeprop.engine.hooks import ExperimentCallbacks
from shapeprop.engine.module import NonFiniteLossError
from shapeprop.engine.train import native_cpu_bf16, train_detector, trainer_options
from shapeprop.models.build import build_detector
from shapeprop.models.mask_branch import find_mask_branch

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("synthetic")
    return catalog.load("synthetic", root=root, split="train", num_images=8, image_size=64).records


class NanAfter(nn.Module):
    """A detector whose `loss_mask` turns NaN at its `bad_call`-th training call."""

    def __init__(self, model: nn.Module, bad_call: int):
        super().__init__()
        self.model, self.bad_call, self.calls = model, bad_call, 0

    def forward(self, images, targets=None, original_sizes=None):
        losses = self.model(images, targets)
        self.calls += 1
        if self.calls == self.bad_call:
            losses["loss_mask"] = losses["loss_mask"] * float("nan")
        return losses


def test_nan_loss_stops_with_term_and_step(records, tmp_path):
    torch.manual_seed(0)
    model = NanAfter(build_detector(ModelConfig(backbone="tiny"), 10, 64, 64), bad_call=3)
    data = DataConfig(min_size=64, max_size=64, num_workers=0)
    schedule = ScheduleConfig(max_steps=5, batch_size=2, warmup_steps=0, milestones=[], checkpoint_every=10)
    with pytest.raises(NonFiniteLossError, match=r"'loss_mask' is nan at step 2"):
        train_detector(model, records, data, schedule, 0, tmp_path, progress=False)


class Scaled(nn.Module):
    """A detector whose losses are multiplied by `factor`: gradients far above any clip."""

    def __init__(self, model: nn.Module, factor: float):
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, images, targets=None, original_sizes=None):
        return {k: v * self.factor for k, v in self.model(images, targets).items()}


@pytest.mark.parametrize("clip", [None, 1.0])
def test_clip_grad_norm_bounds_each_update(records, tmp_path, clip):
    torch.manual_seed(0)
    model = Scaled(build_detector(ModelConfig(backbone="tiny"), 10, 64, 64), 1e4)
    before = [p.detach().clone() for p in model.parameters()]
    data = DataConfig(min_size=64, max_size=64, num_workers=0)
    lr = 0.01  # one plain SGD step (momentum has no history yet, no weight decay): the update is lr * grad
    schedule = ScheduleConfig(
        max_steps=1, batch_size=2, lr=lr, weight_decay=0.0, warmup_steps=0, milestones=[], clip_grad_norm=clip
    )
    train_detector(model, records, data, schedule, 0, tmp_path, progress=False)
    moved = math.sqrt(
        sum(float((p.detach() - b).pow(2).sum()) for p, b in zip(model.parameters(), before, strict=True))
    )
    if clip is None:
        assert moved > 100 * lr
    else:
        assert 0.5 * lr * clip < moved <= lr * clip * (1 + 1e-4)


def test_checkpoint_identity_mismatch_is_refused(records, tmp_path):
    torch.manual_seed(0)
    data = DataConfig(min_size=64, max_size=64, num_workers=0)
    schedule = ScheduleConfig(max_steps=1, batch_size=2, warmup_steps=0, milestones=[], checkpoint_every=1)
    model = build_detector(ModelConfig(backbone="tiny"), 10, 64, 64)
    out = train_detector(model, records, data, schedule, 0, tmp_path, progress=False, identity={"seed": 0})
    assert out.step == 1 and Path(out.last_checkpoint).is_file()
    with pytest.raises(ValueError, match="seed"):
        train_detector(model, records, data, schedule, 0, tmp_path, progress=False, identity={"seed": 1})


def test_gpu_trainer_settings_keep_deterministic_algorithms_off():
    """On a GPU, `torch.use_deterministic_algorithms` sends torchvision's roi_align to a fallback that
    torch.compile recompiles for every RoI count (minutes per step): the settings must keep it off."""
    gpu = trainer_options(ScheduleConfig(precision="16-mixed"), gpu=True)
    assert gpu["deterministic"] is False and gpu["benchmark"] is False
    assert (gpu["accelerator"], gpu["precision"], gpu["strategy"]) == ("gpu", "16-mixed", "auto")
    cpu = trainer_options(ScheduleConfig(precision="16-mixed"), gpu=False)
    assert (cpu["accelerator"], cpu["precision"], cpu["deterministic"]) == ("cpu", "32-true", True)
    assert trainer_options(ScheduleConfig(devices=2), gpu=True)["strategy"] == "ddp"
    # Lightning applies the flag when the Trainer is built: the GPU settings switch it off even
    # after an earlier CPU run in the same process switched it on.
    torch.use_deterministic_algorithms(True)
    try:
        pl.Trainer(**(gpu | {"accelerator": "cpu", "precision": "32-true"}), logger=False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


CPU_FLAGS = "processor\t: {n}\nflags\t\t: fpu sse2 avx2 avx512f avx512bw {extra}\n\n"


@pytest.mark.parametrize(
    "extra, native",
    [("", False), ("avx512_bf16", True), ("amx_tile amx_bf16", True), ("avx512_bf16_x", False)],
)
def test_native_cpu_bf16_reads_the_cpu_flags(tmp_path, extra, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPU_FLAGS.format(n=0, extra=extra) + CPU_FLAGS.format(n=1, extra=extra))
    assert native_cpu_bf16(cpuinfo) is native
    assert native_cpu_bf16(tmp_path / "no such file") is None


def test_bfloat16_on_a_cpu_without_it_warns(tmp_path, monkeypatch, caplog):
    """The mini profiles train in bfloat16: where the CPU emulates it, the run says so (it is slower
    than float32 there); nothing is said where it is native, in float32 or on a GPU."""
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(train, "CPUINFO", cpuinfo)

    def warned(flags: str, precision: str = "bf16-mixed", gpu: bool = False) -> bool:
        cpuinfo.write_text(CPU_FLAGS.format(n=0, extra=flags))
        caplog.clear()
        with caplog.at_level("WARNING", logger=train.__name__):
            trainer_options(ScheduleConfig(precision=precision), gpu=gpu)
        return "bfloat16 is emulated here" in caplog.text and str(cpuinfo) in caplog.text

    assert warned("")
    assert not warned("avx512_bf16")
    assert not warned("", precision="32")
    assert not warned("", gpu=True)


def train_tiny_with_shapeprop(records, tmp_path, precision: str):
    """16 steps of a tiny Mask R-CNN with ShapeProp. Returns the model, its weights before, the
    dtypes its ShapeProp head and its mask head computed in, the losses and the training output."""
    torch.manual_seed(0)
    sp = ShapePropConfig(hidden_channels=16, latent_channels=8, prior_channels=8)
    model = build_detector(ModelConfig(backbone="tiny", shapeprop=sp), 10, 64, 64)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    branch = find_mask_branch(model)
    dtypes = {"shapeprop": set(), "mask head": set()}
    for part, module in (
        ("shapeprop", branch.shapeprop.saliency_logits),
        ("shapeprop", branch.shapeprop.prior_encoder),
        ("mask head", branch.predictor),
    ):
        module.register_forward_hook(lambda mod, args, out, part=part: dtypes[part].add(out.dtype))
    history = []

    class Record(ExperimentCallbacks):
        def on_step(self, step, loss):
            history.append(loss)

    data = DataConfig(min_size=64, max_size=64, num_workers=0)
    # lr 0.01: the default 0.02 without warm-up diverged on the CPU for seed 1
    schedule = ScheduleConfig(
        lr=0.01,
        max_steps=16,
        batch_size=2,
        warmup_steps=0,
        milestones=[],
        checkpoint_every=16,
        precision=precision,
    )
    out = train_detector(model, records, data, schedule, 0, tmp_path, callbacks=Record(), progress=False)
    return model, before, dtypes, history, out


def assert_learned(history: list[float]) -> None:
    assert len(history) == 16 and all(math.isfinite(v) for v in history), history
    # On the CPU (float32, seeds 0-3) the last 4 steps averaged 0.37-0.67 of the first 4; 16 steps
    # leave room for the steps the float16 grad scaler skips while it calibrates.
    assert sum(history[-4:]) < 0.85 * sum(history[:4]), history


def test_cpu_training_runs_in_bfloat16_when_asked_and_learns(records, tmp_path):
    """bf16-mixed applies on the CPU too (the mini profiles train so); 16-mixed does not (above)."""
    assert trainer_options(ScheduleConfig(precision="bf16-mixed"), gpu=False)["precision"] == "bf16-mixed"
    model, _, dtypes, history, _ = train_tiny_with_shapeprop(records, tmp_path, "bf16-mixed")
    # the mask head computed in bfloat16, the ShapeProp head in float32 (ShapePropHead.forward) ...
    assert dtypes == {"shapeprop": {torch.float32}, "mask head": {torch.bfloat16}}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # ... on float32 weights
    assert_learned(history)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["32", "16-mixed", "bf16-mixed"])
def test_gpu_training_compiles_nothing_and_learns(records, tmp_path, precision):
    from torch._dynamo.utils import counters

    counters.clear()
    torch.cuda.reset_peak_memory_stats()
    model, before, dtypes, history, out = train_tiny_with_shapeprop(records, tmp_path, precision)
    assert out.step == 16
    assert not torch.are_deterministic_algorithms_enabled()
    assert sum(counters["frames"].values()) == 0, dict(counters["frames"])  # torch.compile never ran
    assert counters["stats"]["unique_graphs"] == 0
    # Under AMP the mask head must run in half precision, else the precision setting did nothing;
    # the ShapeProp head stays in float32.
    amp_dtype = {"32": torch.float32, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}[precision]
    assert dtypes == {"shapeprop": {torch.float32}, "mask head": {amp_dtype}}
    assert_learned(history)
    params = dict(model.named_parameters())
    assert all(torch.isfinite(p).all() for p in params.values())
    assert (
        torch.cuda.max_memory_allocated() > 0
    )  # it trained on the GPU (Lightning hands the model back on the CPU)
    shapeprop_trained = [
        k for k in params if ".shapeprop." in k and not torch.equal(params[k].cpu(), before[k].cpu())
    ]
    assert shapeprop_trained, "the ShapeProp head did not change"
    if precision == "32":
        return
    # The trained weights give nearly float32's masks under autocast (GT boxes: no sampling).
    # On the CPU, autocast on such models differed by at most 0.005 (float16) and 0.04 (bfloat16).
    model = model.cuda().eval()
    image, target = DetectionDataset(records, 64, 64, hflip=False, train=False)[0]
    image, boxes, labels = image.cuda(), target["boxes"].cuda(), target["labels"].cuda()
    with torch.no_grad():
        full = model.masks_on_boxes(image, boxes, labels)
        with torch.autocast("cuda", dtype=amp_dtype):
            low = model.masks_on_boxes(image, boxes, labels)
    assert full.dtype == torch.float32 and low.dtype == amp_dtype
    tolerance = 0.02 if amp_dtype == torch.float16 else 0.1
    torch.testing.assert_close(low.float(), full, atol=tolerance, rtol=0)
    assert (low.float() - full).abs().mean() < tolerance / 4


def _schedule(max_steps: int) -> ScheduleConfig:
    return ScheduleConfig(
        max_steps=max_steps,
        batch_size=2,
        warmup_steps=0,
        milestones=[],
        checkpoint_every=2,
        keep_checkpoints=2,
    )


def _train(records, workdir: Path, max_steps: int):
    torch.manual_seed(0)
    model = build_detector(ModelConfig(backbone="tiny"), 10, 64, 64)
    data = DataConfig(min_size=64, max_size=64, num_workers=0)
    return train_detector(model, records, data, _schedule(max_steps), 0, workdir, progress=False)


def test_damaged_last_checkpoints_resume_from_the_newest_that_loads_and_say_so(records, tmp_path, caplog):
    _train(records, tmp_path, 4)
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "step_0000002.ckpt", "step_0000004.ckpt"]
    for name in ("last.ckpt", "step_0000004.ckpt"):  # truncated on disk (a full disk, a bad copy)
        data = (ckpts / name).read_bytes()
        (ckpts / name).write_bytes(data[: len(data) // 2])
    caplog.set_level("WARNING", logger="shapeprop.engine.train")
    out = _train(records, tmp_path, 6)
    assert (out.start_step, out.step) == (2, 6)
    assert "checkpoint " + str(ckpts / "last.ckpt") + " does not load" in caplog.text
    assert (
        f"resuming from {ckpts / 'step_0000002.ckpt'} (step 2), the newest checkpoint that loads"
        in caplog.text
    )
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == 6


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
import torch
from shapeprop.config import DataConfig, ModelConfig, ScheduleConfig
from shapeprop.data import catalog
from shapeprop.engine import hooks
from shapeprop.engine.train import train_detector
from shapeprop.models.build import build_detector

workdir, data_root = Path(sys.argv[1]), Path(sys.argv[2])
records = catalog.load("synthetic", root=data_root, split="train", num_images=8, image_size=64).records
real_save = torch.save

saves_at_4 = []

def save_half_then_die(obj, f, *args, **kwargs):  # killed in the middle of writing last.ckpt at step 4
    real_save(obj, f, *args, **kwargs)
    if obj.get("global_step") == 4:
        saves_at_4.append(f)
    if len(saves_at_4) == 2:  # step_0000004.ckpt, then last.ckpt
        if hasattr(f, "flush"):
            f.flush()
        path = Path(getattr(f, "name", f))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

hooks.torch.save = save_half_then_die
torch.set_num_threads(1)
torch.manual_seed(0)
model = build_detector(ModelConfig(backbone="tiny"), 10, 64, 64)
schedule = ScheduleConfig(max_steps=6, batch_size=2, warmup_steps=0, milestones=[], checkpoint_every=2)
train_detector(model, records, DataConfig(min_size=64, max_size=64, num_workers=0), schedule, 0, workdir, progress=False)
"""


def test_run_killed_while_writing_a_checkpoint_resumes_from_the_last_whole_one(records, tmp_path, caplog):
    import subprocess
    import sys

    data_root = tmp_path / "data"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path), str(data_root)], capture_output=True, text=True
    )
    assert killed.returncode == -9, killed.stderr  # SIGKILL, in the middle of writing last.ckpt
    ckpts = tmp_path / "checkpoints"
    caplog.set_level("WARNING", logger="shapeprop.engine.train")
    out = _train(records, tmp_path, 6)
    assert (out.start_step, out.step) == (4, 6)  # from the newest whole checkpoint, step_0000004.ckpt
    assert f"resuming from {ckpts / 'step_0000004.ckpt'} (step 4)" in caplog.text
    assert "left by a checkpoint write that was killed" in caplog.text
    assert not list(ckpts.glob(".*.tmp"))
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == 6
