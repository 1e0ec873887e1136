"""Step-indexed sampling: resume and sharding."""

from __future__ import annotations

import pytest

from shapeprop.engine.sampler import StepBatchSampler

pytestmark = pytest.mark.usefixtures("one_thread")


def test_step_sampler_resumes_and_shards():
    full = list(StepBatchSampler(7, 4, seed=3, start_step=0, max_steps=6))
    resumed = list(StepBatchSampler(7, 4, seed=3, start_step=4, max_steps=6))
    assert resumed == full[4:]
    # every epoch of 7 items is a permutation: the first 7 stream items cover all indices
    stream = [pair for batch in full for pair in batch]
    assert sorted(i for i, _ in stream[:7]) == list(range(7))
    # two ranks split each global batch in halves
    r0 = list(StepBatchSampler(7, 4, 3, 0, 6, rank=0, world_size=2))
    r1 = list(StepBatchSampler(7, 4, 3, 0, 6, rank=1, world_size=2))
    assert [a + b for a, b in zip(r0, r1, strict=True)] == full
    assert list(StepBatchSampler(7, 4, seed=4, start_step=0, max_steps=6)) != full
    with pytest.raises(ValueError, match="divisible"):
        StepBatchSampler(7, 3, 0, 0, 2, world_size=2)
