"""Parameter counts: of built modules (duck-typed) and in closed form, without torch.

The closed forms count the layers that `shapeprop.models.mask_branch.MaskBranch` and
`shapeprop.head.ShapePropHead` build (torchvision's mask head convs and predictor, the ShapeProp
head for a `ShapePropConfig`), by arithmetic on their widths; `tests/shapeprop/models/test_params.py` checks
them against the real modules. With them `widened_mask_head_channels` (Table 4 "more head
params") resolves a width while a suite is loaded, without importing torch.

This module imports no torch (the harness relies on it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shapeprop.models.recipes import recipe

if TYPE_CHECKING:
    from shapeprop.config import ModelConfig, ShapePropConfig

WINDOW = 3  # propagation window of the ShapeProp head (shapeprop.head.WINDOW)
MASK_HEAD_CONVS = 4  # 3x3 convs of the mask head (MaskRCNNHeads / MaskRCNNConvUpsampleHead)


def count_parameters(module: Any) -> int:
    """Number of parameters of `module` (anything with `.parameters()`; 0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def param_counts(model: Any) -> dict[str, int]:
    """`total`, `mask_head` (mask head convs + predictor, the part Table 4 widens) and `shapeprop`.

    A model with its own `param_counts()` (the detectron2 plugin's) counts itself; the torchvision
    detectors expose their `MaskBranch` as `mask_branch`.
    """
    own_counts = getattr(model, "param_counts", None)
    if callable(own_counts):
        return own_counts()
    branch = model.mask_branch
    return {
        "total": count_parameters(model),
        "mask_head": count_parameters(branch.head) + count_parameters(branch.predictor),
        "shapeprop": count_parameters(branch.shapeprop),
    }


def conv_params(in_channels: int, out_channels: int, kernel: int = 1) -> int:
    """A conv (or transposed conv) with bias."""
    return in_channels * out_channels * kernel * kernel + out_channels


def conv_stack_params(in_channels: int, out_channels: int, layers: int, kernel: int = 3) -> int:
    """`shapeprop.head.conv_relu_stack`: `layers` convs, the first in -> out, the others out -> out."""
    if layers == 0:
        return 0
    return conv_params(in_channels, out_channels, kernel) + (layers - 1) * conv_params(
        out_channels, out_channels, kernel
    )


def mask_head_params(in_channels: int, width: int, num_channels_out: int) -> int:
    """torchvision's mask head at `width`: 4 3x3 convs (`in_channels` in), then the predictor
    (2x2 stride-2 deconv, 1x1 conv to `num_channels_out` mask channels)."""
    convs = conv_stack_params(in_channels, width, MASK_HEAD_CONVS, kernel=3)
    return convs + conv_params(width, width, 2) + conv_params(width, num_channels_out, 1)


def shapeprop_head_params(in_channels: int, num_classes: int, cfg: ShapePropConfig) -> int:
    """`shapeprop.head.ShapePropHead(in_channels, num_classes, cfg)`."""
    hidden = cfg.hidden_channels or in_channels
    latent = cfg.latent_channels
    background_map = cfg.mil_loss == "softmax"  # K + 1 saliency maps
    weight_groups = 1 if cfg.channel_agnostic else latent
    saliency = conv_stack_params(in_channels, hidden, cfg.saliency_layers) + conv_params(
        hidden if cfg.saliency_layers else in_channels, num_classes + background_map
    )
    encoder = conv_stack_params(1, latent, cfg.encoder_layers)
    weights = conv_stack_params(in_channels, hidden, cfg.weight_layers) + conv_params(
        hidden, weight_groups * WINDOW**2
    )
    k = cfg.decoder_kernel
    decoder = conv_stack_params(latent, latent, cfg.decoder_layers - 1, k) + conv_params(latent, 1, k)
    prior = conv_stack_params(1, cfg.prior_channels, cfg.prior_layers)
    return saliency + encoder + weights + decoder + prior


def mask_branch_params(
    in_channels: int,
    num_classes: int,
    head_channels: int,
    class_agnostic: bool = False,
    shapeprop: ShapePropConfig | None = None,
) -> dict[str, int]:
    """`mask_head` and `shapeprop` parameters of `shapeprop.models.mask_branch.MaskBranch` (same
    arguments): the shape prior widens the mask head's input by `prior_channels`."""
    extra = shapeprop.prior_channels if shapeprop is not None else 0
    out = 1 if class_agnostic else num_classes
    return {
        "mask_head": mask_head_params(in_channels + extra, head_channels, out),
        "shapeprop": shapeprop_head_params(in_channels, num_classes, shapeprop)
        if shapeprop is not None
        else 0,
    }


def widened_mask_head_channels(model_cfg: ModelConfig, num_classes: int) -> int:
    """Table 4 "more head params": the smallest mask head width whose mask head has at least as many
    parameters as the default mask head plus the ShapeProp head of `model_cfg` (which must set one)."""
    if model_cfg.shapeprop is None:
        raise ValueError("widened_mask_head_channels needs a config with model.shapeprop set")
    in_channels = recipe(model_cfg.backbone).fpn_channels
    width = model_cfg.model_copy(update={"mask_head_channels": None}).mask_head_width()
    counts = mask_branch_params(
        in_channels, num_classes, width, model_cfg.class_agnostic_masks, model_cfg.shapeprop
    )
    target = counts["mask_head"] + counts["shapeprop"]
    out = 1 if model_cfg.class_agnostic_masks else num_classes
    # The count grows with the width: double past the target, then bisect to the smallest width.
    low, high = width - 1, width
    while mask_head_params(in_channels, high, out) < target:
        low, high = high, 2 * high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if mask_head_params(in_channels, mid, out) < target else (low, mid)
    return high
