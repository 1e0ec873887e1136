"""One process of a data-parallel training of the tiny detector (used by tests/e2e/test_ddp.py).

Run as `python tests/e2e/ddp_worker.py OUT --rank R --world W --port P ...`: with W > 1 it sets the
environment Lightning reads for processes started outside it (MASTER_ADDR/PORT, WORLD_SIZE,
RANK, LOCAL_RANK, NODE_RANK), so W of these make one DDP job over gloo on the CPU. Each process
records, for every training step, the images of its batch, its loss terms and its parameters
after the step, in `OUT/rank<R>.pt`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _halves_class():
    from torch import nn

    class Halves(nn.Module):
        """The model, trained on each half of a batch apart, with the two halves' losses averaged."""

        def __init__(self, model: nn.Module):
            super().__init__()
            self.model = model

        def forward(self, images, targets=None, **kwargs):
            if not self.training:
                return self.model(images, targets, **kwargs)
            n = len(images) // 2
            first, second = self.model(images[:n], targets[:n]), self.model(images[n:], targets[n:])
            return {k: (first[k] + second[k]) / 2 for k in first}

    return Halves


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--world", type=int, default=1)
    p.add_argument("--port", type=int, default=29500)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--shapeprop", action="store_true")
    p.add_argument(
        "--exit-after",
        type=int,
        default=0,
        help="die (os._exit) during the step after this one: a killed run",
    )
    p.add_argument(
        "--halves",
        action="store_true",
        help="one process whose loss is the mean of the losses of the two halves of each batch: "
        "the quantity two DDP processes average the gradients of",
    )
    args = p.parse_args()
    if args.world > 1:
        os.environ.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(args.port),
            WORLD_SIZE=str(args.world),
            RANK=str(args.rank),
            LOCAL_RANK=str(args.rank),
            NODE_RANK="0",
        )
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    import lightning.pytorch as pl

    from shapeprop.config import DataConfig, ModelConfig, ScheduleConfig, ShapePropConfig
    from shapeprop.data import catalog
    from shapeprop.engine import hooks
    from shapeprop.engine.train import train_detector
    from shapeprop.models.build import build_detector

    Halves = _halves_class()  # noqa: N806

    train = catalog.load("synthetic", root=args.data, split="train", num_images=8, image_size=64)
    records, num_classes = train.records, len(train.metadata.classes)
    pl.seed_everything(0, verbose=False)
    shapeprop = ShapePropConfig(preset="light") if args.shapeprop else None
    model = build_detector(ModelConfig(backbone="tiny", shapeprop=shapeprop), num_classes, 64, 64)
    data = DataConfig(min_size=64, max_size=64, num_workers=0, hflip=True)
    schedule = ScheduleConfig(
        max_steps=args.steps,
        batch_size=args.batch,
        lr=0.02,
        warmup_steps=0,
        milestones=[],
        checkpoint_every=1,
        devices=args.world,
    )
    # Every anchor and every proposal is sampled (no random subset): one process and two then see
    # the same RoIs, and differ only in how the loss means are weighted (see tests/e2e/test_ddp.py).
    model.rpn.fg_bg_sampler.batch_size_per_image = 10**6
    model.roi_heads.fg_bg_sampler.batch_size_per_image = 10**6
    if args.halves:
        model = Halves(model)
    initial = torch.cat([q.detach().flatten() for q in model.parameters()]).clone()
    steps: list[dict] = []
    original = hooks.ProgressBridge.on_train_batch_end

    def record(self, trainer, pl_module, outputs, batch, batch_idx):
        original(self, trainer, pl_module, outputs, batch, batch_idx)
        params = torch.cat([q.detach().flatten() for q in pl_module.model.parameters()]).clone()
        images = [t["image_id"] for t in batch[1]]
        steps.append({"step": trainer.global_step, "images": images, "losses": dict(pl_module.last_losses)})
        steps[-1]["params"] = params
        partial = {"rank": trainer.global_rank, "steps": steps, "initial": initial}
        torch.save(partial, args.out / f"rank{args.rank}.pt")
        # Lightning runs its checkpoint callbacks after the others: dying here, at the end of step
        # N + 1, leaves step N's checkpoint as the last one, as a kill during step N + 1 would.
        if args.exit_after and trainer.global_step == args.exit_after + 1:
            trainer.strategy.barrier()
            os._exit(3)

    hooks.ProgressBridge.on_train_batch_end = record
    args.out.mkdir(parents=True, exist_ok=True)
    out = train_detector(model, records, data, schedule, 0, args.workdir, progress=False)
    final = torch.cat([q.detach().flatten() for q in model.parameters()])
    torch.save(
        {
            "rank": args.rank,
            "steps": steps,
            "initial": initial,
            "final": final,
            "global_zero": out.is_global_zero,
        },
        args.out / f"rank{args.rank}.pt",
    )


if __name__ == "__main__":
    main()
