"""Closed-form parameter counts (`shapeprop.models.params`) against the real modules, the Table 4
width search, and the torch-free imports of params / recipes."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from shapeprop import head as head_module
from shapeprop.config import ModelConfig, ShapePropConfig
from shapeprop.head import ShapePropHead
from shapeprop.models import params
from shapeprop.models.mask_branch import MaskBranch
from shapeprop.models.params import (
    count_parameters,
    mask_branch_params,
    mask_head_params,
    shapeprop_head_params,
    widened_mask_head_channels,
)
from shapeprop.models.recipes import BACKBONES, recipe

FPN_CHANNELS = sorted({b.recipe.fpn_channels for _, b in BACKBONES.items()})  # tiny 64, ResNets 256

HEADS = [
    ShapePropConfig(),
    ShapePropConfig(preset="light"),
    ShapePropConfig(channel_agnostic=True),
    ShapePropConfig(preset="light", channel_agnostic=True),
    ShapePropConfig(hidden_channels=None),
    ShapePropConfig(preset="light", hidden_channels=32),
    ShapePropConfig(mil_loss="sigmoid", decoder_kernel=1, decoder_layers=1),
    ShapePropConfig(preset="light", mil_loss="softmax", decoder_layers=4, decoder_kernel=3),
    ShapePropConfig(saliency_layers=0, weight_layers=1, encoder_layers=1, prior_layers=1),
    ShapePropConfig(
        latent_channels=8, prior_channels=8, hidden_channels=16, saliency_layers=1, weight_layers=1
    ),
    ShapePropConfig(preset="light", prior_channels=40, prior_layers=3, latent_channels=5),
]


def test_window_matches_the_head():
    assert params.WINDOW == head_module.WINDOW


@pytest.mark.parametrize("cfg", HEADS, ids=range(len(HEADS)))
@pytest.mark.parametrize("in_channels", FPN_CHANNELS)
@pytest.mark.parametrize("num_classes", [1, 8, 10, 80])
def test_shapeprop_head_closed_form(cfg, in_channels, num_classes):
    with torch.device("meta"):
        module = ShapePropHead(in_channels, num_classes, cfg)
    assert shapeprop_head_params(in_channels, num_classes, cfg) == count_parameters(module)


@pytest.mark.parametrize("in_channels", [*FPN_CHANNELS, 64 + 16, 256 + 256])
@pytest.mark.parametrize("width", [1, 7, 64, 96, 256, 431])
@pytest.mark.parametrize("out", [1, 10, 81])
def test_mask_head_closed_form(in_channels, width, out):
    with torch.device("meta"):
        head = MaskRCNNHeads(in_channels, [width] * 4, 1)
        predictor = MaskRCNNPredictor(width, width, out)
    assert mask_head_params(in_channels, width, out) == count_parameters(head) + count_parameters(predictor)


@pytest.mark.parametrize(
    "shapeprop, class_agnostic, in_channels, num_classes, width",
    [
        (sp, agnostic, c, k, w)
        for (sp, agnostic, c, (k, w)) in itertools.product(
            [None, *HEADS[:6]], [False, True], FPN_CHANNELS, [(8, 64), (80, 256), (10, 100)]
        )
    ],
)
def test_mask_branch_closed_form(shapeprop, class_agnostic, in_channels, num_classes, width):
    with torch.device("meta"):
        branch = MaskBranch(["0"], in_channels, num_classes, width, class_agnostic, shapeprop)
    counts = mask_branch_params(in_channels, num_classes, width, class_agnostic, shapeprop)
    assert counts == {
        "mask_head": count_parameters(branch.head) + count_parameters(branch.predictor),
        "shapeprop": count_parameters(branch.shapeprop),
    }


# Recorded from the previous implementation (shapeprop.models.build.widened_mask_head_channels at
# f6295fd, which built the modules on the meta device) BEFORE the closed form replaced it:
# (backbone, preset, num_classes, class_agnostic_masks, channel_agnostic) -> width.
# 10 = synthetic, 8 = bdd100k_fused / bdd100k_ins_seg, 80 = coco_2017.
RECORDED_WIDTHS = {
    ("tiny", "light", 10, False, False): 96,
    ("tiny", "light", 10, False, True): 94,
    ("tiny", "light", 10, True, False): 96,
    ("tiny", "light", 10, True, True): 94,
    ("tiny", "light", 8, False, False): 96,
    ("tiny", "light", 8, False, True): 94,
    ("tiny", "light", 8, True, False): 96,
    ("tiny", "light", 8, True, True): 94,
    ("tiny", "light", 80, False, False): 96,
    ("tiny", "light", 80, False, True): 95,
    ("tiny", "light", 80, True, False): 96,
    ("tiny", "light", 80, True, True): 95,
    ("tiny", "official", 10, False, False): 431,
    ("tiny", "official", 10, False, True): 429,
    ("tiny", "official", 10, True, False): 431,
    ("tiny", "official", 10, True, True): 429,
    ("tiny", "official", 8, False, False): 431,
    ("tiny", "official", 8, False, True): 429,
    ("tiny", "official", 8, True, False): 431,
    ("tiny", "official", 8, True, True): 429,
    ("tiny", "official", 80, False, False): 431,
    ("tiny", "official", 80, False, True): 429,
    ("tiny", "official", 80, True, False): 432,
    ("tiny", "official", 80, True, True): 430,
    ("resnet50", "light", 10, False, False): 369,
    ("resnet50", "light", 10, False, True): 368,
    ("resnet50", "light", 10, True, False): 369,
    ("resnet50", "light", 10, True, True): 368,
    ("resnet50", "light", 8, False, False): 369,
    ("resnet50", "light", 8, False, True): 368,
    ("resnet50", "light", 8, True, False): 369,
    ("resnet50", "light", 8, True, True): 368,
    ("resnet50", "light", 80, False, False): 370,
    ("resnet50", "light", 80, False, True): 368,
    ("resnet50", "light", 80, True, False): 370,
    ("resnet50", "light", 80, True, True): 368,
    ("resnet50", "official", 10, False, False): 526,
    ("resnet50", "official", 10, False, True): 525,
    ("resnet50", "official", 10, True, False): 526,
    ("resnet50", "official", 10, True, True): 525,
    ("resnet50", "official", 8, False, False): 526,
    ("resnet50", "official", 8, False, True): 525,
    ("resnet50", "official", 8, True, False): 526,
    ("resnet50", "official", 8, True, True): 525,
    ("resnet50", "official", 80, False, False): 526,
    ("resnet50", "official", 80, False, True): 525,
    ("resnet50", "official", 80, True, False): 527,
    ("resnet50", "official", 80, True, True): 525,
}

# Recorded the same way, for other heads, with model.mask_head_channels 32 set (ignored by the
# search, which starts from the recipe's width): (head, backbone, class_agnostic_masks) -> width
# for 10 classes.
OTHER_HEADS = {
    "small": dict(
        latent_channels=8, prior_channels=8, hidden_channels=16, saliency_layers=1, weight_layers=1
    ),
    "light_hidden_none": dict(preset="light", hidden_channels=None),
    "light_sigmoid_k1": dict(preset="light", mil_loss="sigmoid", decoder_kernel=1, saliency_layers=0),
    "official_hidden_none": dict(hidden_channels=None, mil_loss="sigmoid"),
}
RECORDED_OTHER_WIDTHS = {
    ("small", "tiny", False): 71,
    ("small", "tiny", True): 71,
    ("small", "resnet101", False): 262,
    ("small", "resnet101", True): 262,
    ("light_hidden_none", "tiny", False): 96,
    ("light_hidden_none", "tiny", True): 96,
    ("light_hidden_none", "resnet101", False): 369,
    ("light_hidden_none", "resnet101", True): 369,
    ("light_sigmoid_k1", "tiny", False): 84,
    ("light_sigmoid_k1", "tiny", True): 84,
    ("light_sigmoid_k1", "resnet101", False): 319,
    ("light_sigmoid_k1", "resnet101", True): 319,
    ("official_hidden_none", "tiny", False): 270,
    ("official_hidden_none", "tiny", True): 270,
    ("official_hidden_none", "resnet101", False): 526,
    ("official_hidden_none", "resnet101", True): 526,
}


def test_widened_widths_equal_the_recorded_ones():
    for (backbone, preset, k, agnostic, channel_agnostic), width in RECORDED_WIDTHS.items():
        sp = ShapePropConfig(preset=preset, channel_agnostic=channel_agnostic)
        cfg = ModelConfig(backbone=backbone, class_agnostic_masks=agnostic, shapeprop=sp)
        assert widened_mask_head_channels(cfg, k) == width, (backbone, preset, k, agnostic, channel_agnostic)
    for (name, backbone, agnostic), width in RECORDED_OTHER_WIDTHS.items():
        sp = ShapePropConfig(**OTHER_HEADS[name])
        cfg = ModelConfig(
            backbone=backbone, class_agnostic_masks=agnostic, mask_head_channels=32, shapeprop=sp
        )
        assert widened_mask_head_channels(cfg, 10) == width, (name, backbone, agnostic)


@pytest.mark.parametrize("backbone", ["tiny", "resnet18"])
@pytest.mark.parametrize("agnostic", [False, True])
def test_widened_width_is_the_smallest_matching_one(backbone, agnostic):
    """Against the real modules: the widened head has at least the default head + ShapeProp's
    parameters, one channel less has fewer."""
    sp = ShapePropConfig(preset="light")
    cfg = ModelConfig(backbone=backbone, class_agnostic_masks=agnostic, shapeprop=sp)
    width = widened_mask_head_channels(cfg, 10)
    c, default = recipe(backbone).fpn_channels, recipe(backbone).mask_head_channels

    def branch(w, shapeprop=None):
        with torch.device("meta"):
            b = MaskBranch(["0"], c, 10, w, agnostic, shapeprop)
        return count_parameters(b.head) + count_parameters(b.predictor) + count_parameters(b.shapeprop)

    target = branch(default, sp)
    assert branch(width) >= target > branch(width - 1)
    with pytest.raises(ValueError, match="model.shapeprop"):
        widened_mask_head_channels(ModelConfig(backbone=backbone), 10)


def test_params_recipes_and_registries_import_no_torch():
    code = (
        "import sys, shapeprop.config, shapeprop.models.params, shapeprop.models.recipes, "
        "shapeprop.models.detectors; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'torchvision'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd()
    )
    assert out.stdout.strip() == "[]"
