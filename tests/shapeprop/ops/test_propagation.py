"""The propagation operator: compiled CPU kernel vs the unfold reference, gradients, layout, fallback."""

from __future__ import annotations

import os
import sys
import warnings

import pytest
import torch

import shapeprop.ops.propagation as prop_module
from shapeprop.ops import normalised_kernels, propagate, propagate_reference

NO_EXT = os.environ.get("SHAPEPROP_NO_EXT") == "1"


@pytest.fixture(scope="module")
def ext():
    """The compiled module; a missing build fails (skips only under the documented SHAPEPROP_NO_EXT=1)."""
    if NO_EXT:
        pytest.skip("SHAPEPROP_NO_EXT=1: the extension is deliberately not built")
    import shapeprop._C as compiled

    return compiled


def _inputs(n, c, h, w, agnostic, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    weights = torch.rand(n, (1 if agnostic else c) * 9, h, w, generator=gen, dtype=dtype) + 0.05
    return x.requires_grad_(), weights.requires_grad_()


def _ext_apply(x, w, steps, norm):
    """The autograd Function over the extension directly (no fallback can hide a failure)."""
    return prop_module._Propagate.apply(x, w, steps, norm == "symmetric")


CASES = [
    # n, c, h, w, agnostic, norm, steps
    (3, 4, 6, 6, False, "random_walk", None),
    (2, 3, 5, 9, False, "random_walk", None),  # H != W
    (2, 3, 9, 4, True, "random_walk", None),  # channel-agnostic
    (2, 5, 7, 5, False, "symmetric", None),
    (3, 2, 4, 8, True, "symmetric", None),
    (0, 4, 6, 6, False, "random_walk", None),  # N = 0
    (0, 4, 6, 6, True, "symmetric", 3),
    (4, 1, 7, 3, False, "random_walk", None),  # C = 1
    (2, 3, 6, 5, False, "symmetric", 1),  # one step
    (2, 3, 5, 4, False, "random_walk", 13),  # steps > max(H, W)
    (2, 3, 5, 4, True, "symmetric", 11),
    (2, 3, 1, 1, False, "random_walk", 2),  # a single location
    (1, 2, 5, 5, False, "random_walk", 0),  # zero steps: identity
]


@pytest.mark.parametrize("n,c,h,w,agnostic,norm,steps", CASES)
def test_extension_matches_reference_float64(ext, n, c, h, w, agnostic, norm, steps):
    x, weights = _inputs(n, c, h, w, agnostic)
    steps_used = max(h, w) if steps is None else steps
    out = _ext_apply(x, weights, steps_used, norm)
    ref = propagate_reference(x, weights, steps, norm)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)
    grad = torch.randn_like(ref)
    if n == 0:
        assert out.shape == ref.shape == x.shape
        gx, gw = torch.autograd.grad(out, (x, weights), grad)
        assert gx.shape == x.shape and gw.shape == weights.shape
        return
    gx, gw = torch.autograd.grad(out, (x, weights), grad)
    rx, rw = torch.autograd.grad(ref, (x, weights), grad, allow_unused=True, materialize_grads=True)
    torch.testing.assert_close(gx, rx, atol=1e-10, rtol=0)
    torch.testing.assert_close(gw, rw, atol=1e-10, rtol=0)


@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("norm", ["random_walk", "symmetric"])
def test_gradcheck(ext, agnostic, norm):
    x, weights = _inputs(2, 2, 4, 3, agnostic, seed=1)
    assert torch.autograd.gradcheck(lambda a, b: _ext_apply(a, b, 5, norm), (x, weights), eps=1e-6, atol=1e-7)


def test_public_propagate_uses_extension_and_defaults_steps(ext):
    x, weights = _inputs(2, 3, 5, 8, False)
    out = propagate(x, weights)
    assert out.grad_fn is not None and "_Propagate" in type(out.grad_fn).__name__
    torch.testing.assert_close(out, propagate_reference(x, weights, 8), atol=1e-10, rtol=0)


@pytest.mark.parametrize("k", range(9))
@pytest.mark.parametrize("use_ext", [False, True])
def test_weight_layout_one_hot_window(k, use_ext, request):
    """All weight on window entry k = i*3 + j moves every value from (h+i-1, w+j-1) to (h, w)."""
    if use_ext:
        request.getfixturevalue("ext")
    i, j = divmod(k, 3)
    h, w = 5, 6
    x = torch.arange(2 * h * w, dtype=torch.float64).view(1, 2, h, w) + 1
    weights = torch.zeros(1, 2 * 9, h, w, dtype=torch.float64)
    weights[:, k] = 1.0
    weights[:, 9 + k] = 1.0
    out = _ext_apply(x, weights, 1, "random_walk") if use_ext else propagate_reference(x, weights, 1)
    expected = torch.zeros_like(x)
    for hh in range(h):
        for ww in range(w):
            sh, sw = hh + i - 1, ww + j - 1
            if 0 <= sh < h and 0 <= sw < w:
                expected[0, :, hh, ww] = x[0, :, sh, sw]
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


def test_random_walk_kernels_sum_to_one_and_symmetric_is_symmetric():
    _, weights = _inputs(2, 1, 5, 5, True)
    rw = normalised_kernels(weights.detach(), "random_walk")
    torch.testing.assert_close(rw.sum(2), torch.ones(2, 1, 5, 5, dtype=torch.float64))
    # With symmetric raw weights A_uv = A_vu, the normalised operator is symmetric as well.
    dense = torch.zeros(25, 25, dtype=torch.float64)
    raw = torch.rand(25, 25, dtype=torch.float64)
    raw = raw + raw.T
    w_sym = torch.zeros(1, 9, 5, 5, dtype=torch.float64)
    for u in range(25):
        for k in range(9):
            vh, vw = u // 5 + k // 3 - 1, u % 5 + k % 3 - 1
            w_sym[0, k, u // 5, u % 5] = raw[u, vh * 5 + vw] if 0 <= vh < 5 and 0 <= vw < 5 else 0.0
    sym = normalised_kernels(w_sym, "symmetric")[0, 0]
    for u in range(25):
        for k in range(9):
            vh, vw = u // 5 + k // 3 - 1, u % 5 + k % 3 - 1
            if 0 <= vh < 5 and 0 <= vw < 5:
                dense[u, vh * 5 + vw] = sym[k, u // 5, u % 5]
    torch.testing.assert_close(dense, dense.T)


def test_zero_weight_locations_block_propagation(ext):
    x, weights = _inputs(1, 2, 6, 6, False)
    weights = weights.detach().clone()
    weights[:, :, 2:4, 1:5] = 0.0  # these locations receive nothing
    out = _ext_apply(x.detach(), weights, 6, "random_walk")
    assert torch.all(out[:, :, 2:4, 1:5] == 0)
    torch.testing.assert_close(out, propagate_reference(x.detach(), weights, 6), atol=1e-10, rtol=0)


def test_float32_and_bfloat16_on_cpu(ext):
    x, weights = _inputs(3, 4, 7, 7, False)
    ref = propagate_reference(x, weights)
    out32 = propagate(x.float(), weights.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), ref, atol=1e-5, rtol=1e-5)
    out16 = propagate(x.bfloat16(), weights.bfloat16())
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.double(), ref, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,message",
    [
        ((2, 3, 5), (2, 27, 5, 5), {}, "x must be"),
        ((2, 3, 5, 5), (2, 26, 5, 5), {}, "C\\*9=27"),
        ((2, 3, 5, 5), (1, 27, 5, 5), {}, "differ in N, H or W"),
        ((2, 3, 5, 5), (2, 27, 5, 5), {"norm": "laplace"}, "norm must be"),
        ((2, 3, 5, 5), (2, 27, 5, 5), {"steps": -1}, "steps must be"),
    ],
)
def test_bad_input_is_named(x_shape, w_shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        propagate(torch.zeros(x_shape), torch.ones(w_shape), **kwargs)


def test_fallback_warns_once_and_matches_reference(monkeypatch):
    monkeypatch.setattr(prop_module, "_extension", None)
    monkeypatch.setattr(prop_module, "_extension_error", "No module named 'shapeprop._C'")
    monkeypatch.setattr(prop_module, "_warned", set())
    x, weights = _inputs(2, 3, 5, 5, False)
    with pytest.warns(RuntimeWarning, match="falls back"):
        out = propagate(x, weights, norm="symmetric")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        propagate(x, weights)  # no second warning
    torch.testing.assert_close(out, propagate_reference(x, weights, norm="symmetric"), atol=0, rtol=0)
    assert out.grad_fn is not None


def test_missing_extension_falls_back_to_the_reference(monkeypatch):
    # An extension that fails to import (here: blocked in sys.modules) is not an error: the failure
    # is kept, the extension reported unavailable, and propagate warns once with its reason and
    # runs the reference.
    monkeypatch.setitem(sys.modules, "shapeprop._C", None)  # `import shapeprop._C` raises ImportError
    monkeypatch.setattr(prop_module, "_extension", None)
    monkeypatch.setattr(prop_module, "_extension_error", None)
    monkeypatch.setattr(prop_module, "_warned", set())
    assert not prop_module.extension_available("cpu")
    assert "shapeprop._C" in prop_module._extension_error
    x, weights = _inputs(1, 2, 4, 4, False)
    with pytest.warns(RuntimeWarning, match=r"shapeprop\._C") as record:
        out = propagate(x, weights, steps=2)
    # The warning points at propagate's caller, this file (stacklevel).
    assert [r.filename for r in record] == [__file__]
    torch.testing.assert_close(out, propagate_reference(x, weights, 2), atol=0, rtol=0)


class _FakeExtension:
    def __init__(self, cuda):
        self.cuda = cuda

    def has_cuda(self):
        return self.cuda


@pytest.mark.parametrize("cuda", [False, True])
def test_extension_serves_cuda_only_when_built_with_it(monkeypatch, cuda):
    # The CPU kernel is always there; CUDA tensors only if the build has CUDA; other devices never.
    monkeypatch.setattr(prop_module, "_extension", _FakeExtension(cuda))
    assert prop_module.extension_available("cpu")
    assert prop_module.extension_available("cuda") is cuda
    assert prop_module.extension_available(torch.device("cuda", 0)) is cuda
    assert not prop_module.extension_available("meta")


def test_shared_kernel_weights_have_nine_channels():
    # Channel-agnostic weights (9 channels, one kernel shared by the C channels) go through the public
    # propagate: each channel propagated with the same kernel.
    x, weights = _inputs(2, 3, 5, 4, True)
    assert weights.shape[1] == 9
    out = propagate(x, weights, steps=3)
    per_channel = propagate_reference(x, weights.repeat(1, 3, 1, 1), 3)
    torch.testing.assert_close(out, per_channel, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="got 6"):
        propagate(x, weights[:, :6])


@pytest.mark.parametrize("steps", [True, 1.0, 2.5, -1])
def test_steps_must_be_a_non_negative_int(steps):
    x, weights = _inputs(1, 2, 4, 4, False)
    with pytest.raises(ValueError, match="steps must be a non-negative int"):
        propagate(x, weights, steps=steps)


def test_zero_steps_return_the_input():
    x, weights = _inputs(2, 3, 4, 5, False)
    out = propagate(x, weights, steps=0)
    torch.testing.assert_close(out, x, atol=0, rtol=0)


def test_second_order_gradients_are_refused(ext):
    # The compiled backward is not differentiable: a double backward (e.g. a gradient penalty) must
    # raise, not silently drop the second-order term.
    x, weights = _inputs(1, 2, 4, 4, False)
    out = propagate(x, weights, steps=2)
    (grad_x,) = torch.autograd.grad((out**2).sum(), x, create_graph=True)
    penalty = (grad_x**2).sum() + 0 * x.sum()
    with pytest.raises(RuntimeError, match="differentiate twice"):
        penalty.backward()


def test_propagate_compiles_into_one_graph_with_the_extensions_gradients(ext):
    """torch.compile traces the kernels as operators (no graph break at the extension) and its
    gradients are the extension's. aot_eager: the graph capture without inductor's code generation."""
    x, weights = _inputs(2, 3, 5, 6, False, dtype=torch.float32)

    def loss(a, b):
        return (propagate(a.relu(), b, steps=4) ** 2).sum()

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    got = torch.autograd.grad(compiled(x, weights), (x, weights))
    expected = torch.autograd.grad(loss(x, weights), (x, weights))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)
