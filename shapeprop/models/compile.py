"""torch.compile for a torchvision detector's fixed-shape parts (`model.compile`).

A training step samples the same number of RoIs per image, so the backbone with its FPN (fixed
image size), the box head and the ShapeProp head's saliency trunk always see the same shapes; the
ShapeProp head's shape path and the mask head see the positive RoIs, whose number changes from
step to step. Those parts are compiled with dynamic RoI counts (one graph for every count, no
recompilation per step); the parts whose work depends on the data (anchors, proposals, NMS,
sampling, matching, per-image post-processing) stay eager.

Compilation is in place (`nn.Module.compile`): the modules keep their weights, names and
`state_dict` keys, so checkpoints are those of an eager model. On a GPU, mode "reduce-overhead"
adds CUDA graphs. The propagation operator is a torch.library operator (`shapeprop.ops.propagation`),
so it stays inside the ShapeProp head's graph.
"""

from __future__ import annotations

from torch import nn

from shapeprop.models.mask_branch import MaskBranch

MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")


def fixed_shape_parts(model: nn.Module) -> dict[str, tuple[nn.Module, bool]]:
    """The compiled parts of a torchvision detector by name: (module, whether its batch varies:
    RoI counts, so compiled with dynamic shapes from the start)."""
    parts: dict[str, tuple[nn.Module, bool]] = {"backbone": (model.backbone, False)}
    roi_heads = getattr(model, "roi_heads", None)
    if roi_heads is not None:  # Mask R-CNN; RetinaMask has no box RoI head
        parts["box_head"] = (roi_heads.box_head, False)
        parts["box_predictor"] = (roi_heads.box_predictor, False)
    branch = next(m for m in model.modules() if isinstance(m, MaskBranch))
    if branch.shapeprop is not None:
        parts["shapeprop"] = (branch.shapeprop, True)
    parts["mask_head"] = (branch.head, True)
    parts["mask_predictor"] = (branch.predictor, True)
    return parts


def compile_fixed_shape_parts(model: nn.Module, mode: str) -> list[str]:
    """Compile `model`'s fixed-shape parts in place with torch.compile `mode`; returns their names."""
    if mode not in MODES:
        raise ValueError(f"compile mode must be one of {MODES}, got {mode!r}")
    parts = fixed_shape_parts(model)
    for module, varying in parts.values():
        # dynamic=None: static shapes until a new shape is seen, then dynamic (eval image sizes)
        module.compile(mode=mode, dynamic=True if varying else None)
    return list(parts)
