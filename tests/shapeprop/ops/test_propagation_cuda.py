"""The CUDA propagation kernel: it must compile with nvcc here; on a GPU it must match the reference."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from shapeprop.ops import propagate_reference
from tests.helpers import ROOT

CSRC = ROOT / "shapeprop" / "ops" / "csrc"


def _nvcc() -> str | None:
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    candidate = Path(cuda_home) / "bin" / "nvcc"
    return str(candidate) if candidate.exists() else shutil.which("nvcc")


def test_cuda_kernel_compiles_with_nvcc(tmp_path):
    """Compile propagate_cuda.cu alone (one architecture) with the flags torch's extension builder uses."""
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (set CUDA_HOME); the CUDA kernel cannot be compiled here")
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS, include_paths

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    cmd = [
        nvcc,
        "-c",
        str(CSRC / "propagate_cuda.cu"),
        "-o",
        str(tmp_path / "propagate_cuda.o"),
        "-std=c++20",
        "-arch=sm_80",
        "-DWITH_CUDA",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        "-Xcompiler",
        "-fPIC",
        *COMMON_NVCC_FLAGS,
        *(f"-I{path}" for path in include_paths(device_type="cuda")),
        f"-I{Path(nvcc).parent.parent / 'include'}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"nvcc failed:\n{result.stderr[-4000:]}"
    assert (tmp_path / "propagate_cuda.o").stat().st_size > 0


def _cuda_ext():
    import shapeprop._C as ext

    if not ext.has_cuda():
        pytest.fail(
            "shapeprop._C was built without CUDA although a GPU is present: rebuild with CUDA_HOME set"
        )
    return ext


def _inputs(n, c, h, w, agnostic, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    weights = torch.rand(n, (1 if agnostic else c) * 9, h, w, generator=gen, dtype=torch.float64) + 0.05
    return x.to(dtype), weights.to(dtype)


GPU_CASES = [
    # n, c, h, w, agnostic, norm, steps
    (3, 4, 6, 6, False, "random_walk", 6),
    (2, 13, 5, 9, False, "symmetric", 9),  # channel tiles with a remainder
    (2, 11, 9, 4, True, "random_walk", 9),  # channel-agnostic across several tiles (atomics)
    (3, 2, 4, 8, True, "symmetric", 12),
    (4, 1, 7, 3, False, "random_walk", 1),
    (2, 3, 1, 1, False, "random_walk", 2),
    (2, 2, 24, 24, False, "random_walk", 24),  # float64 history too large for shared memory
    (1, 2, 5, 5, False, "symmetric", 0),
]


@pytest.mark.gpu
@pytest.mark.parametrize("n,c,h,w,agnostic,norm,steps", GPU_CASES)
def test_cuda_matches_reference_float64(n, c, h, w, agnostic, norm, steps):
    ext = _cuda_ext()
    x, weights = _inputs(n, c, h, w, agnostic, torch.float64)
    x, weights = x.cuda(), weights.cuda()
    grad = torch.randn_like(x)
    out = ext.forward(x, weights, steps, norm == "symmetric")
    gx, gw = ext.backward(grad, x, weights, steps, norm == "symmetric")
    xr, wr = x.cpu().requires_grad_(), weights.cpu().requires_grad_()
    ref = propagate_reference(xr, wr, steps, norm)
    rx, rw = torch.autograd.grad(ref, (xr, wr), grad.cpu(), allow_unused=True, materialize_grads=True)
    torch.testing.assert_close(out.cpu(), ref.detach(), atol=1e-10, rtol=0)
    torch.testing.assert_close(gx.cpu(), rx, atol=1e-10, rtol=0)
    torch.testing.assert_close(gw.cpu(), rw, atol=1e-10, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
@pytest.mark.parametrize("agnostic", [False, True])
def test_cuda_low_precision_inputs(dtype, tol, agnostic):
    _cuda_ext()
    from shapeprop.ops import propagate

    x, weights = _inputs(8, 16, 14, 14, agnostic, dtype, seed=3)
    x, weights = x.cuda().requires_grad_(), weights.cuda().requires_grad_()
    out = propagate(x, weights)
    assert out.dtype == dtype
    grad = torch.randn_like(out)
    gx, gw = torch.autograd.grad(out, (x, weights), grad)
    xr, wr = x.detach().double().cpu().requires_grad_(), weights.detach().double().cpu().requires_grad_()
    ref = propagate_reference(xr, wr)
    rx, rw = torch.autograd.grad(ref, (xr, wr), grad.double().cpu())
    torch.testing.assert_close(out.double().cpu(), ref.detach(), atol=tol, rtol=tol)
    torch.testing.assert_close(gx.double().cpu(), rx, atol=tol, rtol=tol)
    torch.testing.assert_close(gw.double().cpu(), rw, atol=tol, rtol=tol)


@pytest.mark.gpu
def test_cuda_gradcheck():
    _cuda_ext()
    from shapeprop.ops.propagation import _Propagate

    x, weights = _inputs(2, 3, 4, 5, False, torch.float64, seed=1)
    x, weights = x.cuda().requires_grad_(), weights.cuda().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: _Propagate.apply(a, b, 5, True), (x, weights), eps=1e-6, atol=1e-7
    )
