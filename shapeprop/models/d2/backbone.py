"""The torchvision FPN backbones of `shapeprop.models.backbones` as a detectron2 `Backbone`.

With it a detectron2 model has exactly the backbone of the torchvision path (same modules, same
`model.weights` handling), so the two frameworks differ only in their detector heads.
"""

from __future__ import annotations

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torchvision.models.detection.backbone_utils import BackboneWithFPN

from shapeprop.models.backbones import fpn_backbone
from shapeprop.models.recipes import BACKBONES, TOP_BLOCKS
from shapeprop.registry import UnknownName


class TorchvisionFPN(Backbone):
    """Wraps a torchvision `BackboneWithFPN`; its outputs, in order, are renamed to `levels`."""

    def __init__(self, fpn: BackboneWithFPN, levels: list[tuple[str, int]]):
        super().__init__()
        self.fpn = fpn
        self._out_features = [name for name, _ in levels]
        self._out_feature_strides = dict(levels)
        self._out_feature_channels = {name: fpn.out_channels for name, _ in levels}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.fpn(x)
        if len(outputs) != len(self._out_features):
            raise RuntimeError(
                f"the torchvision FPN gave {len(outputs)} levels, expected {self._out_features}"
            )
        return dict(zip(self._out_features, outputs.values(), strict=True))

    @property
    def size_divisibility(self) -> int:
        return 32


@BACKBONE_REGISTRY.register()
def build_torchvision_fpn_backbone(cfg, input_shape: ShapeSpec) -> TorchvisionFPN:
    """`MODEL.BACKBONE.NAME: build_torchvision_fpn_backbone`, configured by `MODEL.TORCHVISION_FPN`:
    `NAME` a registered backbone (`shapeprop.models.recipes.BACKBONES`), `TOP_BLOCK` a key of
    `shapeprop.models.recipes.TOP_BLOCKS`."""
    node = cfg.MODEL.TORCHVISION_FPN
    if input_shape.channels != 3:
        raise ValueError(
            f"build_torchvision_fpn_backbone: needs 3 input channels, got {input_shape.channels}"
        )
    try:
        BACKBONES.get(node.NAME)
    except UnknownName as err:
        raise ValueError(f"MODEL.TORCHVISION_FPN.NAME: {err}") from None
    if node.TOP_BLOCK not in TOP_BLOCKS:
        raise ValueError(
            f"MODEL.TORCHVISION_FPN.TOP_BLOCK: {node.TOP_BLOCK!r} is not one of {', '.join(TOP_BLOCKS)}"
        )
    fpn = fpn_backbone(node.NAME, node.WEIGHTS or None, node.TOP_BLOCK)
    return TorchvisionFPN(fpn, list(TOP_BLOCKS[node.TOP_BLOCK].levels))
