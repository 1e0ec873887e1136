"""Which part of the ShapeProp head tolerates bfloat16: one step's gradients against float32's.

    .venv/bin/python reports/mini/recipe/head_bf16_gradients.py

A light head (width 32, latent 8, 5 classes) on 12 random RoIs of 32 x 14 x 14, the shape path on 4
of them, its MIL and reconstruction losses plus a stand-in for the mask head's use of the prior;
one backward in float32, then the same under CPU bfloat16 autocast two ways: the whole head (its
`_forward`, without the float32 guard of `forward`) and the saliency learner alone
(`saliency_autocast`). Prints, per parameter, the cosine between the two gradients and the ratio of
their norms (docs/roofline.md, "The head in bfloat16, by parts").
"""

from __future__ import annotations

import contextlib

import torch

from shapeprop.config import ShapePropConfig
from shapeprop.head import ShapePropHead


def gradients(mode: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    cfg = ShapePropConfig(
        preset="light", hidden_channels=32, latent_channels=8, saliency_autocast=mode == "saliency"
    )
    head = ShapePropHead(32, 5, cfg)
    feats = torch.randn(12, 32, 14, 14)
    classes = torch.arange(12) % 5
    rows = torch.tensor([0, 3, 4, 9])
    labels, masks, has_mask = (
        (classes + 1) * (torch.arange(12) % 2),
        torch.rand(4, 14, 14),
        torch.ones(4, dtype=torch.bool),
    )
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if mode != "float32" else contextlib.nullcontext()
    with amp:
        if mode == "whole head":
            out = head._forward(feats.to(torch.bfloat16), classes, rows)
        else:
            out = head(feats.to(torch.bfloat16) if mode != "float32" else feats, classes, shape_rois=rows)
        losses = head.losses(out, labels, masks, has_mask, shape_rois=rows)
    (sum(losses.values()) + out.prior.float().square().mean()).backward()
    return {name: p.grad.float().clone() for name, p in head.named_parameters()}


def main() -> None:
    reference = gradients("float32")
    for mode in ("whole head", "saliency"):
        print(f"bfloat16: {mode}")
        for name, grad in gradients(mode).items():
            cosine = torch.nn.functional.cosine_similarity(grad.flatten(), reference[name].flatten(), dim=0)
            ratio = grad.norm() / reference[name].norm()
            print(f"  {name:28s} cosine {float(cosine):7.4f}  norm ratio {float(ratio):8.4f}")


if __name__ == "__main__":
    main()
