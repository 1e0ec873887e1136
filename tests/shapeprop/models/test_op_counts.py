"""The operator counts: which operators synchronise the host with a CUDA device."""

from __future__ import annotations

import torch

from shapeprop.models.op_counts import count_ops


def test_count_ops_finds_the_syncing_operators():
    x = torch.arange(6.0)
    mask = x > 2
    count = count_ops(lambda: (x[mask], x[torch.tensor([0, 2])], x.sum().item(), torch.where(mask)), x.device)
    assert count.syncs == {"aten.index": 1, "aten._local_scalar_dense": 1, "aten.nonzero": 1}
    assert count.ops["aten.index"] == 2 and count.total_ops >= 5
    repeats = torch.tensor([1, 2])
    count = count_ops(
        lambda: (repeats.repeat_interleave(repeats), repeats.repeat_interleave(repeats, output_size=3)),
        x.device,
    )
    assert count.total_syncs == 1

    def masked_assignment():
        y = x.clone()
        y[mask] = 0.0

    assert count_ops(masked_assignment, x.device).total_syncs == 1
    assert count_ops(lambda: x.clone().masked_fill_(mask, 0.0), x.device).total_syncs == 0
