"""Checkpoints are written atomically."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    from shapeprop.engine.hooks import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, target)
    assert torch.load(target, weights_only=False) == {"global_step": 1}

    def broken_save(obj, file):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"global_step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=False) == {"global_step": 1}  # the old file is intact
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no temporary left behind
