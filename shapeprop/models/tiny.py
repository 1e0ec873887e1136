"""The tiny backbone: a small conv net for CPU work, the miniatures' stand-in for a ResNet.

Its detector sizes are in `shapeprop.models.recipes` (`recipe("tiny")`); its ImageNet stand-in
(`model.weights: synthetic-pretrained`) is trained by `shapeprop.models.pretrain`, which imports
this module (never the other way round).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

TINY_CHANNELS = (16, 32, 64, 128, 128)


class TinyNet(nn.Sequential):
    """Five stride-2 stages of two 3x3 conv-BN-ReLU each (16 -> 128 channels); strides 2..32."""

    def __init__(self, channels: tuple[int, ...] = TINY_CHANNELS):
        stages = OrderedDict()
        cin = 3
        for i, cout in enumerate(channels, start=1):
            stages[f"stage{i}"] = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )
            cin = cout
        super().__init__(stages)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def tiny_body(returned_layers: list[int]) -> tuple[TinyNet, dict[str, str], list[int]]:
    """A fresh `TinyNet`, the FPN's `return_layers` and input channels for `returned_layers`
    (ResNet numbering, as `shapeprop.models.backbones.build_backbone` takes them)."""
    # TinyNet stage k+1 has the stride of ResNet layer k (stage1 = the ResNet stem)
    return_layers = {f"stage{k + 1}": str(i) for i, k in enumerate(returned_layers)}
    return TinyNet(), return_layers, [TINY_CHANNELS[k] for k in returned_layers]
