"""A training step as a roofline: the arithmetic it does, the fraction of the machine's peak it
reaches, and where the rest of its time goes.

FLOPs are counted, not estimated: `torch.utils.flop_counter.FlopCounterMode` over one step
(forward, backward, optimizer), which counts matrix products and convolutions (2 FLOPs per
multiply-add) and, by the formulas registered here, the propagation kernel; elementwise work
is not counted (it is memory-bound). The peak is that of a large matmul on the same device and
thread count (`matmul_peaks`), in float32 and bfloat16. The time not spent in operators with
FLOPs is split by torch.profiler into other operators (copies, indexing, elementwise, NMS) and
time outside operators (Python, autograd bookkeeping, the profiler's own per-operator cost).
`python -m shapeprop.models.bench --roofline` prints it for the plain and the ShapeProp step;
docs/roofline.md holds the figures.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import torch

from shapeprop.ops import propagation  # noqa: F401  (registers torch.ops.shapeprop)
from shapeprop.timing import timed

# Operators whose time is arithmetic (the FLOPs FlopCounterMode counts: matrix products and
# convolutions, forward and backward, and the propagation kernel); the rest move or index memory,
# or do elementwise work.
FLOP_OPS = ("conv", "mm", "bmm", "addmm", "baddbmm", "matmul", "linear", "propagate")


def matmul_peaks(device: torch.device, size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """FLOP/s of a `size`-square matmul in float32 and bfloat16 at the current thread count: the
    machine's practical peak, the roofline's ceiling (best of `repeats`)."""
    peaks = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        a @ b
        best = min(timed(lambda a=a, b=b: a @ b, device) for _ in range(repeats))
        peaks[str(dtype).removeprefix("torch.")] = 2 * size**3 / best
    return peaks


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of `fn` (backward included) as torch.utils.flop_counter counts them:
    matrix products and convolutions (2 per multiply-add), and the propagation (its formula below);
    elementwise work is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _register_propagation_flops() -> None:
    from torch.utils.flop_counter import register_flop_formula

    # a step is 9 multiply-adds per output value; the backward does it for the input and the weights
    @register_flop_formula(torch.ops.shapeprop.propagate_forward)
    def _forward(x_shape, w_shape, steps, symmetric, **kwargs) -> int:
        return 2 * 9 * steps * math.prod(x_shape)

    @register_flop_formula(torch.ops.shapeprop.propagate_backward)
    def _backward(grad_shape, x_shape, w_shape, steps, symmetric, **kwargs) -> int:
        return 2 * 2 * 9 * steps * math.prod(x_shape)


_register_propagation_flops()


def step_roofline(
    fn: Callable[[], Any], device: torch.device, peaks: dict[str, float], repeats: int = 3
) -> dict[str, Any]:
    """A call of `fn` (a training step) as a roofline: `flops` counted, `wall_s` (median of `repeats`
    unprofiled calls), `fraction_of_peak` per dtype peak, and from torch.profiler (CPU-side times per
    call over `repeats` more calls, `profiled_s`): `flop_ops_s` (self time of the operators with
    FLOPs), `other_ops_s` (of the others), `outside_ops_s` (the rest of the wall time: Python,
    autograd bookkeeping, the profiler's own), `top` (the 12 operators of most self time per call:
    seconds, calls)."""
    from torch.profiler import ProfilerActivity, profile

    flops = count_flops(fn)
    wall = statistics.median(timed(fn, device) for _ in range(repeats))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        profiled = sum(timed(fn, device) for _ in range(repeats)) / repeats
    ops = [e for e in prof.key_averages() if "::" in e.key and not e.key.startswith("autograd::")]
    ops = [e for e in ops if not e.key.startswith(("Optimizer.", "cudaDeviceSynchronize"))]
    with_flops = sum(e.self_cpu_time_total for e in ops if _has_flops(e.key)) / 1e6 / repeats
    others = sum(e.self_cpu_time_total for e in ops if not _has_flops(e.key)) / 1e6 / repeats
    top = sorted(ops, key=lambda e: -e.self_cpu_time_total)[:12]
    return {
        "flops": flops,
        "wall_s": wall,
        "fraction_of_peak": {dtype: flops / wall / peak for dtype, peak in peaks.items()},
        "profiled_s": profiled,
        "flop_ops_s": with_flops,
        "other_ops_s": others,
        "outside_ops_s": max(profiled - with_flops - others, 0.0),
        "top": [(e.key, e.self_cpu_time_total / 1e6 / repeats, e.count // repeats) for e in top],
    }


def _has_flops(name: str) -> bool:
    op = name.split("::", 1)[-1]
    return (
        any(op == k or op.startswith(k + "_") or op.endswith("_" + k) for k in FLOP_OPS)
        or "convolution" in op
    )


def format_roofline(r: dict[str, Any]) -> str:
    """The roofline table of `run_benchmark(..., roofline=True)`."""
    peaks = r["peaks"]
    lines = [
        "matmul peak (2048^2, this thread count): "
        + ", ".join(f"{dtype} {peak / 1e9:.0f} GFLOP/s" for dtype, peak in peaks.items()),
        f"{'training step':<16} {'GFLOP':>7} {'s':>7} "
        + " ".join(f"{'%' + dtype[:4]:>7}" for dtype in peaks)
        + f" {'ops':>6} {'profiled s':>10} {'FLOP ops':>9} {'other ops':>9} {'outside':>8}",
    ]
    for name, x in r["roofline"].items():
        lines.append(
            f"{name:<16} {x['flops'] / 1e9:>7.2f} {x['wall_s']:>7.4f} "
            + " ".join(f"{100 * f:>7.1f}" for f in x["fraction_of_peak"].values())
            + f" {x['ops']:>6} {x['profiled_s']:>10.4f} {x['flop_ops_s']:>9.4f} {x['other_ops_s']:>9.4f}"
            f" {x['outside_ops_s']:>8.4f}"
        )
    for name, x in r["roofline"].items():
        lines.append(
            f"{name}: most self time: " + ", ".join(f"{k} {1e3 * t:.1f} ms/{n}" for k, t, n in x["top"])
        )
    return "\n".join(lines)
