"""`propagate`: the fused propagation operator of Eq. 4, with autograd, on top of `shapeprop._C`."""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

import torch

from shapeprop.ops.reference import WINDOW, propagate_reference

NORMS = ("random_walk", "symmetric")

_extension: ModuleType | None = None
_extension_error: str | None = None
_warned: set[str] = set()


def _load_extension() -> ModuleType | None:
    global _extension, _extension_error
    if _extension is None and _extension_error is None:
        try:
            _extension = importlib.import_module("shapeprop._C")
        except ImportError as err:  # not built, or built against another torch
            _extension_error = str(err)
    return _extension


_load_extension()  # at import, not at the first call: torch.compile cannot trace an import


def extension_available(device: torch.device | str = "cpu") -> bool:
    """Whether the compiled kernel serves tensors on `device` (else `propagate` uses the reference)."""
    ext = _load_extension()
    if ext is None:
        return False
    kind = torch.device(device).type
    return kind == "cpu" or (kind == "cuda" and bool(ext.has_cuda()))


def _warn_once(device_type: str) -> None:
    if device_type in _warned:
        return
    _warned.add(device_type)
    why = _extension_error or f"it was built without {device_type.upper()} support"
    warnings.warn(
        f"shapeprop._C is unavailable for {device_type} tensors ({why}); propagate() falls back to the "
        "slower pure-PyTorch reference. Build it with `python setup.py build_ext --inplace`.",
        RuntimeWarning,
        stacklevel=3,
    )


# The kernels as torch.library operators with shapes for tracing ("fake" kernels): torch.compile
# keeps a propagation inside its graph instead of breaking the graph at an opaque pybind call.
@torch.library.custom_op("shapeprop::propagate_forward", mutates_args=())
def _forward_op(x: torch.Tensor, w: torch.Tensor, steps: int, symmetric: bool) -> torch.Tensor:
    return _load_extension().forward(x, w, steps, symmetric)


@_forward_op.register_fake
def _(x: torch.Tensor, w: torch.Tensor, steps: int, symmetric: bool) -> torch.Tensor:
    return x.new_empty(x.shape)


@torch.library.custom_op("shapeprop::propagate_backward", mutates_args=())
def _backward_op(
    grad_out: torch.Tensor, x: torch.Tensor, w: torch.Tensor, steps: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    grad_x, grad_w = _load_extension().backward(grad_out, x, w, steps, symmetric)
    return grad_x, grad_w


@_backward_op.register_fake
def _(grad_out, x, w, steps, symmetric) -> tuple[torch.Tensor, torch.Tensor]:
    return x.new_empty(x.shape), w.new_empty(w.shape)


class _Propagate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, steps: int, symmetric: bool) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.steps, ctx.symmetric = steps, symmetric
        return _forward_op(x, w, steps, symmetric)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, w = ctx.saved_tensors
        grad_x, grad_w = _backward_op(grad_out.contiguous(), x, w, ctx.steps, ctx.symmetric)
        return grad_x, grad_w, None, None


def _check(x: torch.Tensor, w: torch.Tensor, steps: int | None, norm: str) -> int:
    if x.dim() != 4:
        raise ValueError(f"propagate: x must be [N, C, H, W], got shape {tuple(x.shape)}")
    if w.dim() != 4:
        raise ValueError(f"propagate: w must be [N, Cw*9, H, W], got shape {tuple(w.shape)}")
    n, c, h, w_ = x.shape
    if (w.shape[0], w.shape[2], w.shape[3]) != (n, h, w_):
        raise ValueError(f"propagate: x {tuple(x.shape)} and w {tuple(w.shape)} differ in N, H or W")
    if w.shape[1] not in (c * WINDOW**2, WINDOW**2):
        raise ValueError(
            f"propagate: w must have C*9={c * WINDOW**2} (a kernel per channel) or 9 (channel-agnostic) "
            f"channels, got {w.shape[1]}"
        )
    if x.device != w.device:
        raise ValueError(f"propagate: x is on {x.device} but w is on {w.device}")
    if norm not in NORMS:
        raise ValueError(f"propagate: norm must be one of {NORMS}, got {norm!r}")
    steps = max(h, w_) if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"propagate: steps must be a non-negative int or None, got {steps!r}")
    return steps


def propagate(
    x: torch.Tensor, w: torch.Tensor, steps: int | None = None, norm: str = "random_walk"
) -> torch.Tensor:
    """Propagate the latent saliency `x` with learned location-specific 3x3 kernels (Eq. 4).

    Args:
        x: latent saliency `[N, C, H, W]`.
        w: non-negative raw propagation weights `[N, Cw*9, H, W]`, `Cw` = C (a kernel per channel)
            or 1 (channel-agnostic, shared by all channels). Layout: for channel group `c`, window row
            `i` and column `j` (0..2), the weight is `w[:, c*9 + i*3 + j]` and links a location
            `(h, w)` to its neighbour `(h + i - 1, w + j - 1)`.
        steps: number of steps; None = `max(H, W)`, enough to reach every location. 0 returns `x`.
        norm: how the 9 weights of a location `u` become its kernel `K_u`. With the degree
            `d_u = max(sum_k w_u,k, 1e-12)` (all 9 entries, including neighbours outside the map):
            `"random_walk"` (D^-1 A): `K_u,k = w_u,k / d_u`, so every kernel sums to 1;
            `"symmetric"` (D^-1/2 A D^-1/2): `K_u,k = w_u,k / sqrt(d_u * d_v)`, `v` the k-th neighbour of `u`.

    Each step computes `y_u <- sum_k K_u,k * y_{v(k)}`; neighbours outside the map contribute zero.
    Returns a tensor shaped and typed like `x`, differentiable w.r.t. `x` and `w`.

    The compiled kernel (`shapeprop._C`: CPU in float32/float64, CUDA in float32/float16/bfloat16
    with float32 accumulation) is used when built; otherwise this warns once and runs
    `propagate_reference`. Other CPU dtypes are computed in float32. `x` and `w` are promoted to
    a common dtype. The CUDA kernel holds a RoI's maps in shared memory, which bounds the map size
    (about 40x40 to 50x50 in float32, depending on the GPU); larger maps raise an error naming
    the size.
    """
    steps = _check(x, w, steps, norm)
    dtype = torch.promote_types(x.dtype, w.dtype)
    x, w = x.to(dtype), w.to(dtype)
    if not extension_available(x.device):
        _warn_once(x.device.type)
        return propagate_reference(x, w, steps, norm)
    compute = dtype
    if x.device.type == "cpu" and dtype not in (torch.float32, torch.float64):
        compute = torch.float32
    out = _Propagate.apply(x.to(compute).contiguous(), w.to(compute).contiguous(), steps, norm == "symmetric")
    return out.to(dtype)
