"""Run-to-run spread of the ShapeProp head's float32 gradients on CUDA, and of its autocast gradients
against float32 (test_head.py::test_head_computes_in_float32_under_autocast). On a GPU machine:
`PYTHONPATH=. python3 tools/cuda_grad_noise.py` after the operator build; the 2026-11-28 H100
output: docs/gpu-check-runs/2026-11-28-h100-grad-noise.txt."""

import torch

from shapeprop.config import ShapePropConfig
from shapeprop.head import ShapePropHead

dev = "cuda"
torch.manual_seed(0)
head = ShapePropHead(32, 5, ShapePropConfig(preset="light", hidden_channels=32, latent_channels=8)).to(dev)
feats = torch.randn(12, 32, 14, 14, device=dev)
classes = torch.arange(12, device=dev) % 5
rows = torch.tensor([0, 3, 4, 9], device=dev)
targets = (
    (classes + 1) * (torch.arange(12, device=dev) % 2),
    torch.rand(4, 14, 14, device=dev),
    torch.ones(4, dtype=torch.bool, device=dev),
)


def run(dtype, autocast):
    head.zero_grad()
    with torch.autocast(dev, dtype=dtype, enabled=autocast):
        out = head(feats.to(dtype) if autocast else feats.to(dtype).float(), classes, shape_rois=rows)
        losses = head.losses(out, *targets, shape_rois=rows)
    (sum(losses.values()) + out.prior.square().mean()).backward()
    return {k: p.grad.clone() for k, p in head.named_parameters()}


for dtype in (torch.float16, torch.bfloat16):
    ref = run(dtype, False)
    for label, grads in (
        ("fp32 again", [run(dtype, False) for _ in range(5)]),
        ("autocast", [run(dtype, True) for _ in range(5)]),
    ):
        worst = {k: max(float((g[k] - ref[k]).abs().max()) for g in grads) for k in ref}
        rel = {
            k: max(float(((g[k] - ref[k]).abs() / ref[k].abs().clamp_min(1e-12)).max()) for g in grads)
            for k in ref
        }
        bad = {k: (f"{worst[k]:.2e}", f"{rel[k]:.2e}", tuple(ref[k].shape)) for k in ref if worst[k] > 0}
        print(dtype, label, "params differing (max abs, max rel, shape):", bad or "none")
