"""The Lightning module that trains a detector: SGD, warm-up + multi-step LR, per-step seeding."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from shapeprop.config import ScheduleConfig


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or Inf; the message names the term and the step."""


def lr_factor(step: int, schedule: ScheduleConfig) -> float:
    """LR multiplier at `step`: linear warm-up from `warmup_factor`, then x`gamma` at each milestone."""
    factor = schedule.gamma ** sum(step >= m for m in schedule.milestones)
    if step < schedule.warmup_steps:
        alpha = step / schedule.warmup_steps
        factor *= schedule.warmup_factor * (1 - alpha) + alpha
    return factor


def step_seed(seed: int, step: int, rank: int) -> int:
    """The RNG seed of one training step (RPN/RoI sampling draw from torch's global RNG)."""
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63)


class DetectorModule(pl.LightningModule):
    """Wraps a detector whose training forward returns a dict of losses.

    Every step reseeds torch's RNG from (seed, step, rank), so a step's sampling does not depend on
    the history: a run resumed from a checkpoint repeats exactly what the uninterrupted run did.
    """

    def __init__(self, model: nn.Module, schedule: ScheduleConfig, seed: int, train_loader_fn=None):
        super().__init__()
        self.model = model
        self.schedule = schedule
        self.seed = seed
        self._train_loader_fn = train_loader_fn
        self.last_losses: dict[str, float] = {}

    def train_dataloader(self):
        # Built here, after Lightning restored a checkpoint, so it can start at the restored step.
        if self._train_loader_fn is None:
            raise RuntimeError("DetectorModule was built without a training data source")
        return self._train_loader_fn(self.global_step, self.global_rank, self.trainer.world_size)

    def training_step(
        self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]], batch_idx: int
    ) -> torch.Tensor:
        step = self.global_step
        torch.manual_seed(step_seed(self.seed, step, self.global_rank))
        images, targets = batch
        losses = self.model(images, targets)
        total = sum(losses.values())
        # One host-device sync per step: every term's value travels in one copy.
        values = torch.stack([total.detach(), *(v.detach() for v in losses.values())]).float().tolist()
        self.last_losses = dict(zip(["loss", *losses], values, strict=True))
        for name, value in zip(losses, values[1:], strict=True):
            if not math.isfinite(value):
                raise NonFiniteLossError(f"loss term '{name}' is {value} at step {step}")
        return total

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        s = self.schedule
        optimizer = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, s))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def current_lr(self) -> float:
        """The learning rate of the next step."""
        return float(self.trainer.optimizers[0].param_groups[0]["lr"])
