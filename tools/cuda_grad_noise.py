"""Run-to-run spread of the ShapeProp head's float32 gradients on CUDA, and of its autocast gradients
against float32, on the case of tests/shapeprop/test_head.py::test_head_computes_in_float32_under_autocast,
which sets its CUDA tolerance from this. On a GPU machine, after the operator build:
`PYTHONPATH=. python3 tools/cuda_grad_noise.py`; the 2026-11-28 H100 output is
docs/gpu-check-runs/2026-11-28-h100-grad-noise.txt."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.shapeprop.test_head import autocast_case  # noqa: E402

REPEATS = 5

for dtype in (torch.float16, torch.bfloat16):
    _, run = autocast_case("cuda", dtype)
    _, ref = run(False)
    for label, autocast in (("fp32 again", False), ("autocast", True)):
        grads = [run(autocast)[1] for _ in range(REPEATS)]
        worst = {k: max(float((g[k] - ref[k]).abs().max()) for g in grads) for k in ref}
        rel = {
            k: max(float(((g[k] - ref[k]).abs() / ref[k].abs().clamp_min(1e-12)).max()) for g in grads)
            for k in ref
        }
        differing = {
            k: (f"{worst[k]:.2e}", f"{rel[k]:.2e}", tuple(ref[k].shape)) for k in ref if worst[k] > 0
        }
        print(dtype, label, "params differing (max abs, max rel, shape):", differing or "none")
