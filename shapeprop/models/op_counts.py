"""Operators a piece of work dispatches, and which of them synchronise the host with a CUDA device.

`count_ops` counts, for one call (backward included), the ATen operators dispatched and the ones
whose result's size or value is read on the host (`SYNCING_OPS`, boolean-mask indexing, ...), on
any device; on a GPU it adds the synchronisations CUDA itself reports
(`torch.cuda.set_sync_debug_mode`). `python -m shapeprop.models.bench --count` prints them for a
training step with and without ShapeProp (`format_counts`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Operators that wait for a CUDA device to finish: their result's size or value is read on the host.
SYNCING_OPS = {
    "aten.nonzero",
    "aten._local_scalar_dense",  # .item(), float(t), int(t), bool(t), `if t:`
    "aten.is_nonzero",
    "aten.masked_select",
    "aten.equal",
    "aten.unique_dim",
    "aten._unique2",
    "aten.unique_consecutive",
}


def _syncs(func, args: tuple, kwargs: dict) -> bool:
    name = str(func.overloadpacket)
    if name in SYNCING_OPS:
        return True
    if name in ("aten.index", "aten.index_put", "aten.index_put_"):  # a boolean mask becomes nonzero()
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in indices)
    if name == "aten.repeat_interleave":  # without output_size the length is read on the host
        return torch.is_tensor(args[0]) and kwargs.get("output_size") is None and len(args) < 4
    return False


@dataclass
class OpCount:
    """Operators dispatched by a piece of work, and which of them synchronise with a CUDA device."""

    ops: Counter = field(default_factory=Counter)
    syncs: Counter = field(default_factory=Counter)
    cuda_syncs: int | None = None  # what CUDA's sync debug mode reported (on a GPU only)
    cuda_sync_sites: Counter = field(default_factory=Counter)  # "file:line" of the Python caller

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())

    @property
    def total_syncs(self) -> int:
        return sum(self.syncs.values())


class _Counting(TorchDispatchMode):
    def __init__(self, count: OpCount):
        super().__init__()
        self.count = count

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        self.count.ops[name] += 1
        if _syncs(func, args, kwargs):
            self.count.syncs[name] += 1
        return func(*args, **kwargs)


def count_ops(fn: Callable[[], Any], device: torch.device) -> OpCount:
    """Run `fn` once, counting the ATen operators it dispatches (backward included) and the syncing
    ones; on CUDA also the synchronisations the sync debug mode reports."""
    count = OpCount()
    cuda = device.type == "cuda"
    with contextlib.ExitStack() as stack:
        if cuda:
            torch.cuda.synchronize(device)
            caught = stack.enter_context(warnings.catch_warnings(record=True))
            warnings.simplefilter("always")
            previous = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("warn")
            stack.callback(torch.cuda.set_sync_debug_mode, previous)
        stack.enter_context(_Counting(count))
        fn()
    if cuda:
        syncs = [w for w in caught if "synchronizing" in str(w.message)]
        count.cuda_syncs = len(syncs)
        count.cuda_sync_sites = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)
    return count


def format_counts(counts: dict[str, OpCount], rows: int = 15) -> str:
    """Per-step totals of both models, and the operators ShapeProp adds most of."""
    plain, sp = counts["plain"], counts["shapeprop"]
    lines = [
        f"{'per training step':<28} {'plain':>8} {'shapeprop':>10} {'added':>8}",
        f"{'operators dispatched':<28} {plain.total_ops:>8} {sp.total_ops:>10} {sp.total_ops - plain.total_ops:>8}",
        f"{'syncing operators':<28} {plain.total_syncs:>8} {sp.total_syncs:>10} {sp.total_syncs - plain.total_syncs:>8}",
    ]
    if plain.cuda_syncs is not None:
        added = sp.cuda_syncs - plain.cuda_syncs
        lines.append(f"{'CUDA-reported syncs':<28} {plain.cuda_syncs:>8} {sp.cuda_syncs:>10} {added:>8}")
        sites = Counter(sp.cuda_sync_sites)
        sites.subtract(plain.cuda_sync_sites)
        lines.append(
            "CUDA syncs by site (shapeprop - plain): "
            + (", ".join(f"{k} {v:+d}" for k, v in sites.items() if v) or "none")
        )
    added_ops = Counter({k: sp.ops[k] - plain.ops[k] for k in sp.ops.keys() | plain.ops.keys()})
    lines.append(
        "operators ShapeProp adds most of: "
        + ", ".join(f"{k.removeprefix('aten.')} {v:+d}" for k, v in added_ops.most_common(rows) if v)
    )
    syncs = Counter({k: sp.syncs[k] - plain.syncs[k] for k in sp.syncs.keys() | plain.syncs.keys()})
    lines.append(
        "syncing operators by kind (shapeprop - plain): "
        + (", ".join(f"{k.removeprefix('aten.')} {v:+d}" for k, v in syncs.items() if v) or "none")
    )
    return "\n".join(lines)
