"""Progress callbacks of an experiment, and the Lightning callbacks that feed them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO

from shapeprop.contract import ExperimentCallbacks
from shapeprop.files import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the same directory, then rename over the target: a write
    that fails or is killed leaves the previous checkpoint whole. A failed write raises the
    file system's OSError (e.g. ENOSPC, no space left), which torch's writer would hide in a
    RuntimeError."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as file:
            try:
                torch.save(checkpoint, file)
            except RuntimeError as err:
                if isinstance(err.__context__, OSError):
                    raise err.__context__ from err
                raise


class NotifyingCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that tells the experiment callbacks about every file it writes."""

    def __init__(self, callbacks: ExperimentCallbacks, **kwargs: Any):
        super().__init__(**kwargs)
        self.experiment_callbacks = callbacks

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            self.experiment_callbacks.on_checkpoint(Path(filepath), trainer.global_step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning skips `last` at the end when an earlier step already wrote one; a finished run
        # must leave `last` at its final step so that running it again only evaluates.
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


class LossProgressBar(RichProgressBar):
    """Lightning's progress bar showing the module's last loss, a float already on the host (a
    logged tensor would cost the progress bar one more device sync per step)."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        loss = getattr(pl_module, "last_losses", {}).get("loss")
        if loss is not None:
            items["loss"] = f"{loss:.4g}"
        return items


def _mark(device: torch.device) -> torch.cuda.Event | float:
    """Now: a CUDA event on the GPU's stream (read later, no sync now), else the host clock."""
    if device.type == "cuda":
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event
    return time.perf_counter()


def _seconds(start: torch.cuda.Event | float, end: torch.cuda.Event | float) -> float:
    if isinstance(start, float):
        return end - start
    end.synchronize()
    return start.elapsed_time(end) / 1000


class ProgressBridge(pl.Callback):
    """Averages the step losses over `log_every` steps for `on_metrics`, and times training steps.

    Step time runs from batch start (data already loaded) to batch end (optimizer stepped); on a
    GPU it is read from CUDA events once per logging window, so timing adds no sync per step. The
    first `warmup` steps of each process are not timed (a run too short for that reports the mean
    of all its steps). The sums travel in the checkpoint, so a resumed run reports the time over
    all its timed steps.
    """

    def __init__(self, callbacks: ExperimentCallbacks, log_every: int, warmup: int = 3):
        self.callbacks, self.log_every, self.warmup = callbacks, max(1, log_every), warmup
        self.time_sum, self.time_count = 0.0, 0
        self.all_sum, self.all_count = 0.0, 0  # every step, warm-up included
        self._window: dict[str, float] = {}
        self._window_steps = 0
        self._steps_here = 0
        self._start: torch.cuda.Event | float = 0.0
        self._pending: list[tuple[Any, Any]] = []  # (start, end) marks of steps not yet added up
        self._lr = 0.0

    @property
    def seconds_per_step(self) -> float | None:
        self._add_pending()
        if self.time_count:
            return self.time_sum / self.time_count
        return self.all_sum / self.all_count if self.all_count else None

    def _add_pending(self) -> None:
        for start, end in self._pending:
            elapsed = _seconds(start, end)
            self._steps_here += 1
            self.all_sum += elapsed
            self.all_count += 1
            if self._steps_here > self.warmup:
                self.time_sum += elapsed
                self.time_count += 1
        self._pending.clear()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.callbacks.on_start(int(trainer.max_steps), int(trainer.global_step))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._lr = float(trainer.optimizers[0].param_groups[0]["lr"])
        self._start = _mark(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._pending.append((self._start, _mark(pl_module.device)))
        for name, value in pl_module.last_losses.items():
            self._window[name] = self._window.get(name, 0.0) + value
        self._window_steps += 1
        step = int(trainer.global_step)
        if trainer.is_global_zero:
            self.callbacks.on_step(step, pl_module.last_losses.get("loss"))
        if step % self.log_every == 0 or step >= trainer.max_steps:
            self._add_pending()
            metrics = {k: v / self._window_steps for k, v in self._window.items()}
            metrics["lr"] = self._lr
            self._window, self._window_steps = {}, 0
            if trainer.is_global_zero:
                self.callbacks.on_metrics(metrics, step)

    def state_dict(self) -> dict[str, Any]:
        self._add_pending()
        return {
            "time_sum": self.time_sum,
            "time_count": self.time_count,
            "all_sum": self.all_sum,
            "all_count": self.all_count,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.time_sum = float(state_dict.get("time_sum", 0.0))
        self.time_count = int(state_dict.get("time_count", 0))
        self.all_sum = float(state_dict.get("all_sum", 0.0))
        self.all_count = int(state_dict.get("all_count", 0))
