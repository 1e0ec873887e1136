"""Train a detector with Lightning: checkpoints every K steps plus `last.ckpt`, resume from `last`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from shapeprop.config import DataConfig, ScheduleConfig
from shapeprop.contract import ExperimentCallbacks
from shapeprop.data.loading import DetectionDataset, collate
from shapeprop.engine.hooks import (
    AtomicCheckpointIO,
    LossProgressBar,
    NotifyingCheckpoint,
    ProgressBridge,
)
from shapeprop.engine.launch import launched_rank
from shapeprop.engine.module import DetectorModule
from shapeprop.engine.sampler import StepBatchSampler
from shapeprop.files import atomic_path

LAST = "last.ckpt"

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    """Where training ended: the step reached, the mean step time, the last checkpoint."""

    step: int
    start_step: int
    seconds_per_step: float | None
    last_checkpoint: Path
    is_global_zero: bool = True  # under DDP only global rank 0 evaluates


def checkpoint_step(path: Path) -> int:
    """The global step stored in a Lightning checkpoint."""
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def load_model_weights(model: nn.Module, path: Path) -> dict[str, Any]:
    """Load the detector weights of a Lightning checkpoint written by `train_detector`; returns it."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    model.load_state_dict(state)
    return ckpt


def write_model_weights(checkpoint: Path, dst: Path) -> Path:
    """The detector weights of a checkpoint of `train_detector`, without the optimizer and trainer
    state (about a third of its size), as a file `load_model_weights` reads: the weights a finished
    run ships in its MLflow Model."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    kept = {k: ckpt[k] for k in ("state_dict", "global_step", "shapeprop_identity") if k in ckpt}
    with atomic_path(dst) as tmp:
        torch.save(kept, tmp)
    return Path(dst)


def newest_loadable_checkpoint(ckpt_dir: Path) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint to resume from and its contents: the newest written of `last.ckpt` and the
    step checkpoints that loads (one that does not, truncated or garbled, is passed over); (None,
    None) when none does. Says which it took, and why, in the log. Temporary files of a write that was killed
    (`atomic_path`'s `.<name>.*.tmp`) are removed."""
    for stale in ckpt_dir.glob(".*.tmp"):
        log.warning("removing %s, left by a checkpoint write that was killed", stale)
        stale.unlink(missing_ok=True)
    # newest written first (a kill in the middle of writing `last` leaves it older than the step
    # checkpoint written just before it); `last` first among equals
    found = [p for p in [ckpt_dir / LAST, *ckpt_dir.glob("step_*.ckpt")] if p.is_file()]
    candidates = sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name == LAST), reverse=True)
    for i, path in enumerate(candidates):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            step = int(ckpt["global_step"])
        except Exception as err:  # truncated or garbled: a torch/pickle/zip error, or no global_step
            log.warning(
                "checkpoint %s does not load (%s: %s); trying an older one", path, type(err).__name__, err
            )
            continue
        if i > 0 or path.name != LAST:
            log.warning("resuming from %s (step %d), the newest checkpoint that loads", path, step)
        return path, ckpt
    if candidates:
        log.warning("no checkpoint in %s loads: training starts from scratch", ckpt_dir)
    return None, None


def _check_identity(ckpt: dict[str, Any], identity: dict[str, Any] | None, path: Path) -> None:
    saved = ckpt.get("shapeprop_identity")
    if identity is not None and saved is not None and saved != identity:
        diff = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
        raise ValueError(
            f"{path} was written by a run with a different configuration ({', '.join(diff)} differ); "
            "use a fresh workdir or delete its checkpoints/"
        )


class _Module(DetectorModule):
    def __init__(self, *args: Any, identity: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.identity = identity

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.identity is not None:
            checkpoint["shapeprop_identity"] = self.identity


def trainer_options(schedule: ScheduleConfig, gpu: bool) -> dict[str, Any]:
    """The Trainer settings that decide how a training step runs, on a GPU or on the CPU.

    GPU: `deterministic=False`. With `torch.use_deterministic_algorithms` on, torchvision's
    `roi_align` on CUDA takes its pure-Python fallback, which torch.compile compiles again for every
    new number of RoIs: minutes per step instead of milliseconds. GPU training is therefore seeded
    (the same data order, sampling and initialisation) but not bitwise reproducible: the backward
    passes of RoIAlign and other CUDA kernels accumulate with atomics in a varying order.
    `benchmark=False`: the RoI batch sizes change every step, so cuDNN would autotune every step.
    CPU: deterministic algorithms on (no CPU op here falls back or slows down for it); of AMP, only
    bfloat16.
    """
    world = schedule.devices * schedule.num_nodes
    return {
        "accelerator": "gpu" if gpu else "cpu",
        "devices": schedule.devices,
        "num_nodes": schedule.num_nodes,
        "strategy": "ddp" if world > 1 else "auto",
        "precision": _precision(schedule.precision, gpu),
        "deterministic": not gpu,
        "benchmark": False,
        "gradient_clip_val": schedule.clip_grad_norm,
        "gradient_clip_algorithm": "norm",
    }


def _precision(precision: str, gpu: bool) -> str:
    """Lightning's precision: AMP as configured on a GPU; on the CPU only bfloat16 (CPUs with
    AVX-512 BF16 run a mini step ~1.25x faster, docs/cpu-recipe-benchmark.md; float16 has no fast
    CPU path). Warns where the CPU lacks native bfloat16: there it is slower than float32."""
    if precision == "bf16-mixed" and not gpu and native_cpu_bf16(CPUINFO) is False:
        log.warning(
            "schedule.precision bf16-mixed on a CPU without AVX-512 BF16 or AMX-BF16 (%s lists neither "
            "flag): bfloat16 is emulated here, slower than float32; --set schedule.precision=32 trains "
            "faster, as another run (the precision is part of its key)",
            CPUINFO,
        )
    if precision == "bf16-mixed" or (gpu and precision != "32"):
        return precision
    return "32-true"


CPUINFO = Path("/proc/cpuinfo")  # Linux's; elsewhere unread, and no warning


def native_cpu_bf16(cpuinfo: Path) -> bool | None:
    """Whether the CPU computes bfloat16 natively: AVX-512 BF16 or AMX-BF16 among the flags of
    `cpuinfo` (Linux's); None where that file cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def train_detector(
    model: nn.Module,
    records: list[dict[str, Any]],
    data_cfg: DataConfig,
    schedule: ScheduleConfig,
    seed: int,
    workdir: Path,
    callbacks: ExperimentCallbacks | None = None,
    progress: bool = True,
    log_every: int = 20,
    identity: dict[str, Any] | None = None,
) -> TrainOutcome:
    """Train `model` in place for `schedule.max_steps` steps, resuming from `workdir/checkpoints/last.ckpt`.

    `identity` (e.g. the model and data config) is stored in the checkpoints; resuming from a
    checkpoint with another identity raises ValueError. A checkpoint already at `max_steps` only
    loads the weights. Uses the GPU(s) when present (AMP per `schedule.precision`, DDP across
    `devices` x `num_nodes`), the CPU otherwise.
    """
    callbacks = callbacks or ExperimentCallbacks()
    ckpt_dir = Path(workdir) / "checkpoints"
    last = ckpt_dir / LAST
    bridge = ProgressBridge(callbacks, log_every)
    resume, ckpt = newest_loadable_checkpoint(ckpt_dir)
    if resume is not None:
        _check_identity(ckpt, identity, resume)
        if ckpt["global_step"] >= schedule.max_steps:
            load_model_weights(model, resume)
            state = next((v for k, v in ckpt.get("callbacks", {}).items() if "ProgressBridge" in k), {})
            bridge.load_state_dict(state)
            callbacks.on_start(schedule.max_steps, int(ckpt["global_step"]))
            step = int(ckpt["global_step"])
            return TrainOutcome(step, step, bridge.seconds_per_step, resume, launched_rank() == 0)
    start = int(ckpt["global_step"]) if ckpt is not None else 0
    del ckpt

    def make_loader(start_step: int, rank: int, world_size: int) -> DataLoader:
        dataset = DetectionDataset(records, data_cfg.min_size, data_cfg.max_size, data_cfg.hflip, train=True)
        sampler = StepBatchSampler(
            len(records), schedule.batch_size, seed, start_step, schedule.max_steps, rank, world_size
        )
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=data_cfg.num_workers,
            collate_fn=collate,
            pin_memory=torch.cuda.is_available(),  # page-locked batches: the copy to the GPU overlaps
            generator=torch.Generator().manual_seed(seed),
        )

    module = _Module(model, schedule, seed, make_loader, identity=identity)
    checkpointing = NotifyingCheckpoint(
        callbacks,
        dirpath=ckpt_dir,
        filename="step_{step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=schedule.checkpoint_every,
        # ranked by step: the newest `keep_checkpoints` stay, older ones are deleted
        save_top_k=schedule.keep_checkpoints,
        monitor="step",
        mode="max",
        save_last=True,
        save_on_train_epoch_end=False,
        enable_version_counter=False,
    )
    extra = [checkpointing, bridge]
    if progress:
        extra.append(LossProgressBar(refresh_rate=1))
    trainer = pl.Trainer(
        **trainer_options(schedule, gpu=torch.cuda.is_available()),
        max_steps=schedule.max_steps,
        max_epochs=-1,
        logger=False,
        callbacks=extra,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        use_distributed_sampler=False,
        default_root_dir=str(workdir),
    )
    trainer.fit(module, ckpt_path=str(resume) if resume is not None else None)
    return TrainOutcome(
        int(trainer.global_step), start, bridge.seconds_per_step, last, trainer.is_global_zero
    )
