"""Wall-clock timing of GPU work: the one home of "wait for the device before reading the clock"."""

from __future__ import annotations

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for the work queued on `device` (a no-op on the CPU, whose ops are synchronous)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
