"""A training batch sampler indexed by optimisation step, so a resumed run sees the same batches.

The sample stream is the concatenation of seeded epochs: epoch e is a permutation of the images
with a seeded flip per image, both drawn from a generator seeded by (seed, e). Step s of the global
batch B takes stream items [s*B, (s+1)*B); rank r of W takes its B/W slice of them. Nothing depends
on what was drawn before, so starting at step s needs no replay and no saved state.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class StepBatchSampler(Sampler[list[tuple[int, bool]]]):
    """Batches of `(index, flip)` pairs for steps `start_step` .. `max_steps - 1` of this rank."""

    def __init__(
        self,
        num_items: int,
        global_batch: int,
        seed: int,
        start_step: int,
        max_steps: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        if num_items < 1:
            raise ValueError("the training set is empty")
        if global_batch % world_size:
            raise ValueError(
                f"schedule.batch_size {global_batch} is not divisible by the {world_size} processes"
            )
        self.num_items, self.global_batch, self.seed = num_items, global_batch, seed
        self.start_step, self.max_steps = start_step, max_steps
        self.rank, self.local_batch = rank, global_batch // world_size
        self._epoch: tuple[int, list[int], list[bool]] | None = None

    def __len__(self) -> int:
        # The whole run, not the steps left: Lightning restores its batch counter on resume and
        # ends its epoch when the counter reaches this length. With the steps left here, a resumed
        # run would start a second epoch early and replay the batches after its checkpoint.
        return self.max_steps

    def _draw(self, epoch: int) -> tuple[list[int], list[bool]]:
        if self._epoch is None or self._epoch[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.num_items, generator=gen).tolist()
            flips = (torch.rand(self.num_items, generator=gen) < 0.5).tolist()
            self._epoch = (epoch, order, flips)
        return self._epoch[1], self._epoch[2]

    def item(self, k: int) -> tuple[int, bool]:
        """Item `k` of the global sample stream."""
        order, flips = self._draw(k // self.num_items)
        i = k % self.num_items
        return order[i], flips[i]

    def batch(self, step: int) -> list[tuple[int, bool]]:
        """This rank's part of the global batch of `step`."""
        first = step * self.global_batch + self.rank * self.local_batch
        return [self.item(k) for k in range(first, first + self.local_batch)]

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        for step in range(self.start_step, self.max_steps):
            yield self.batch(step)
