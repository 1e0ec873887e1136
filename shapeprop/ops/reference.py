"""Pure-PyTorch (unfold-based) reference of the propagation operator, kept for tests and benchmarks.

It materialises the 3x3 neighbourhood of every location at every step, so its memory grows as
`steps * N * C * 9 * H * W`; the compiled operator in `shapeprop._C` computes the same thing
without it. See `shapeprop.ops.propagate` for the definition and the weight layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WINDOW = 3
EPS = 1e-12  # lower bound of the per-location weight sum (the same constant as csrc/propagate.h)


def normalised_kernels(w: torch.Tensor, norm: str = "random_walk") -> torch.Tensor:
    """Normalise raw weights `[N, Cw*9, H, W]` into kernels `[N, Cw, 9, H, W]` (see `propagate`)."""
    n, cw9, h, w_ = w.shape
    cw = cw9 // WINDOW**2
    groups = w.view(n, cw, WINDOW**2, h, w_)
    degree = groups.sum(2, keepdim=True).clamp_min(EPS)
    if norm == "random_walk":
        return groups / degree
    if norm == "symmetric":
        inv_sqrt = degree.rsqrt()  # [N, Cw, 1, H, W]
        neighbours = F.unfold(inv_sqrt.view(n, cw, h, w_), WINDOW, padding=WINDOW // 2)
        return groups * inv_sqrt * neighbours.view_as(groups)
    raise ValueError(f"norm must be 'random_walk' or 'symmetric', got {norm!r}")


def propagate_reference(
    x: torch.Tensor, w: torch.Tensor, steps: int | None = None, norm: str = "random_walk"
) -> torch.Tensor:
    """Eq. 4 with `F.unfold`: the same contract as `shapeprop.ops.propagate`, differentiable by autograd."""
    n, c, h, w_ = x.shape
    steps = max(h, w_) if steps is None else steps
    kernels = normalised_kernels(w, norm)  # [N, Cw, 9, H, W], Cw broadcasts over C when 1
    y = x
    for _ in range(steps):
        neighbours = F.unfold(y, WINDOW, padding=WINDOW // 2).view(n, c, WINDOW**2, h, w_)
        y = (neighbours * kernels).sum(2)
    return y
