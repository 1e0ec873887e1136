"""Which process of a data-parallel run this is, from what its launcher set (no torch import)."""

from __future__ import annotations

import os


def launched_rank() -> int:
    """The global rank of this process in its run, as its launcher set it before Lightning starts:
    `RANK` (torch.distributed's variable, which the harness's executors set for every process of a
    run of several), 0 for a process started alone."""
    return int(os.environ.get("RANK", "0"))
