"""FPN backbones: torchvision ResNet-18/50/101, and the tiny conv net of `shapeprop.models.tiny`.

Weights come from a local checkpoint path, or a torchvision weight name (e.g.
`ResNet50_Weights.IMAGENET1K_V1`, which downloads on first use); None means random init. Nothing is
downloaded unless a weight name is given. The tiny backbone also takes `synthetic-pretrained`, the
ImageNet stand-in of `shapeprop.models.pretrain` (trained on first use, then cached), which
`resolve_weights` turns into its checkpoint path. The builders here are the bodies of the built-in
`BACKBONES` entries (`shapeprop.models.recipes`, which also has their FPN widths).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_weight, resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from shapeprop.models.pretrain import resolve_weights
from shapeprop.models.recipes import BACKBONES, TOP_BLOCKS, recipe
from shapeprop.models.tiny import TinyNet, tiny_body

__all__ = [
    "TinyNet",  # re-exported: the tiny backbone's home is shapeprop.models.tiny
    "build_backbone",
    "fpn_backbone",
    "load_body_weights",
]
Body = tuple[nn.Module, dict[str, str], list[int]]  # body, FPN return_layers, FPN in_channels


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"model.weights: checkpoint {path} does not exist")
    obj = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"model.weights: {path} holds a {type(obj).__name__}, not a state dict")
    return obj


def load_body_weights(body: nn.Module, path: str | Path) -> None:
    """Load a local checkpoint into a backbone body, accepting classifier or detector key prefixes.

    Raises ValueError naming the file when fewer than 90% of the body's tensors are found.
    """
    path = Path(path)
    state = _read_state_dict(path)
    own = body.state_dict()
    found = {}
    for key, value in state.items():
        for prefix in ("", "module.", "backbone.body.", "backbone.", "body.", "model."):
            if key.startswith(prefix) and key[len(prefix) :] in own:
                name = key[len(prefix) :]
                if own[name].shape != value.shape:
                    raise ValueError(
                        f"model.weights: {path}: {key} has shape {tuple(value.shape)}, expected {tuple(own[name].shape)}"
                    )
                found[name] = value
                break
    if len(found) < 0.9 * len(own):
        raise ValueError(
            f"model.weights: {path} matches only {len(found)} of the backbone's {len(own)} tensors; "
            "expected a torchvision ResNet (or detector) state dict"
        )
    body.load_state_dict(found, strict=False)


def build_tiny_body(weights: str | None, returned_layers: list[int]) -> Body:
    """The body of the built-in backbone "tiny" (`recipes.Backbone.body`)."""
    body, return_layers, in_channels = tiny_body(returned_layers)
    if weights:
        load_body_weights(body, weights)
    return body, return_layers, in_channels


def build_resnet_body(name: str, weights: str | None, returned_layers: list[int]) -> Body:
    """The body of the built-in backbones "resnet18/50/101" (`recipes.Backbone.body`, `name` bound)."""
    is_path = weights is not None and (
        Path(weights).suffix in (".pth", ".pt", ".ckpt") or Path(weights).exists()
    )
    tv_weights = get_weight(weights) if weights and not is_path else None
    pretrained = weights is not None
    # Pretrained: frozen BN and the stem + layer1 frozen (Detectron's recipe); from scratch: train all with BN.
    body = getattr(resnet, name)(
        weights=tv_weights, norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    )
    if is_path:
        load_body_weights(body, weights)
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][: 3 if pretrained else 5]
    if not pretrained:
        trainable.append("bn1")
    for pname, parameter in body.named_parameters():
        if all(not pname.startswith(layer) for layer in trainable):
            parameter.requires_grad_(False)
    return_layers = {f"layer{k}": str(i) for i, k in enumerate(returned_layers)}
    in_channels_stage2 = body.inplanes // 8
    return body, return_layers, [in_channels_stage2 * 2 ** (k - 1) for k in returned_layers]


def build_backbone(
    name: str, weights: str | None, returned_layers: list[int], extra_blocks: ExtraFPNBlock | None
) -> BackboneWithFPN:
    """An FPN over stages `returned_layers` (1-based, ResNet numbering: 2 = stride 4 ... 4 = stride 32)
    of the registered backbone `name` (`UnknownName` otherwise)."""
    entry = BACKBONES.get(name)
    body, return_layers, in_channels = entry.body(resolve_weights(name, weights), returned_layers)
    return BackboneWithFPN(
        body, return_layers, in_channels, entry.recipe.fpn_channels, extra_blocks=extra_blocks
    )


# the torchvision block that adds each top block's extra levels, for the FPN width
EXTRA_BLOCKS: dict[str, Callable[[int], ExtraFPNBlock]] = {
    "maxpool": lambda channels: LastLevelMaxPool(),
    "p6p7": lambda channels: LastLevelP6P7(channels, channels),
}


def fpn_backbone(name: str, weights: str | None, top_block: str) -> BackboneWithFPN:
    """The FPN of `top_block` (`recipes.TOP_BLOCKS`: "maxpool" gives keys '0'..'3', 'pool' on strides
    4-64; "p6p7" keys '0', '1', '2', 'p6', 'p7' on strides 8-128) over the backbone `name`."""
    extra = EXTRA_BLOCKS[top_block](recipe(name).fpn_channels)
    return build_backbone(name, weights, list(TOP_BLOCKS[top_block].stages), extra)
