"""Backbones: the `BACKBONES` registry, and per backbone the sizes of a detector on it, written once.

The tiny backbone (`shapeprop.models.tiny`) runs the CPU miniatures, so its detectors use fewer
proposals and sampled RoIs and narrower heads; the ResNets use the Detectron / torchvision sizes.
`recipe(name)` (with `model.sizes` applied: `ModelConfig.backbone_recipe()`) is read by every
builder: the backbones (FPN width), the detectors of both frameworks (RPN, box head, RetinaNet candidates), the
mask branch (mask head width) and the closed-form parameter counts (`shapeprop.models.params`).
What a detector does with them (thresholds, fractions, poolers) is its own recipe
(`shapeprop.models.detectors`).

The FPN levels of each top block and the anchors do not depend on the backbone; they are here too,
so that both frameworks take them from one place. This module imports no torch: a backbone's body
builder is imported when it is called (`Lazy`).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shapeprop.registry import Registry

# The `model.weights` name of the tiny backbone's pretrained stand-in (shapeprop.models.pretrain),
# here so that torch-free code (preflight) can recognise it.
SYNTHETIC_PRETRAINED = "synthetic-pretrained"


@dataclass(frozen=True)
class Lazy:
    """`module:attribute`, imported when first called, so that registering it imports no torch."""

    target: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)(*args, **kwargs)


@dataclass(frozen=True)
class BackboneRecipe:
    """The sizes of a detector on one backbone (torchvision names; detectron2 keys in comments)."""

    name: str
    fpn_channels: int  # FPN output channels (MODEL.FPN.OUT_CHANNELS)
    mask_head_channels: int  # mask head conv width unless model.mask_head_channels (ROI_MASK_HEAD.CONV_DIM)
    rpn_pre_nms_top_n: tuple[int, int]  # (training, testing) (RPN.PRE_NMS_TOPK_TRAIN / _TEST)
    rpn_post_nms_top_n: tuple[int, int]  # (training, testing) (RPN.POST_NMS_TOPK_TRAIN / _TEST)
    rpn_batch_size_per_image: int  # RPN.BATCH_SIZE_PER_IMAGE
    box_batch_size_per_image: int  # sampled RoIs per image (ROI_HEADS.BATCH_SIZE_PER_IMAGE)
    box_head_channels: int  # TwoMLPHead representation size (ROI_BOX_HEAD.FC_DIM)
    retinanet_topk_candidates: int  # per level, before NMS (RETINANET.TOPK_CANDIDATES_TEST)
    synthetic_pretraining: bool = False  # SYNTHETIC_PRETRAINED weights exist (models.pretrain)


# (weights, ResNet stages) -> (body, FPN return_layers, in_channels): see `Backbone`
Body = Callable[[str | None, list[int]], Any]


@dataclass(frozen=True)
class Backbone:
    """A `BACKBONES` entry. Both frameworks build the same torchvision FPN over `body`
    (`shapeprop.models.backbones.fpn_backbone`; detectron2 wraps it), sized by `recipe`.

    `body(weights, stages)` builds the network: `weights` a checkpoint path, a torchvision weight
    name or None; `stages` the 1-based ResNet stages the FPN reads (1 = stride 4 ... 4 = stride 32).
    It returns the body, its FPN `return_layers` ({module name: "0", ...}) and their channels.
    """

    recipe: BackboneRecipe
    body: Body


BACKBONES: Registry[Backbone] = Registry("backbone")


def register_backbone(recipe: BackboneRecipe, body: Body, *, source: str = "shapeprop") -> Backbone:
    """Register `body` with its sizes as the backbone `recipe.name` (`model.backbone`)."""
    return BACKBONES.register(recipe.name, Backbone(recipe, body), source=source)


register_backbone(
    BackboneRecipe(
        name="tiny",
        fpn_channels=64,
        mask_head_channels=64,
        rpn_pre_nms_top_n=(500, 300),
        rpn_post_nms_top_n=(200, 100),
        rpn_batch_size_per_image=128,
        box_batch_size_per_image=128,
        box_head_channels=256,
        retinanet_topk_candidates=300,
        synthetic_pretraining=True,
    ),
    Lazy("shapeprop.models.backbones:build_tiny_body"),
)
for _name in ("resnet18", "resnet50", "resnet101"):
    register_backbone(
        BackboneRecipe(
            name=_name,
            fpn_channels=256,
            mask_head_channels=256,
            rpn_pre_nms_top_n=(2000, 1000),
            rpn_post_nms_top_n=(2000, 1000),
            rpn_batch_size_per_image=256,
            box_batch_size_per_image=512,
            box_head_channels=1024,
            retinanet_topk_candidates=1000,
        ),
        functools.partial(Lazy("shapeprop.models.backbones:build_resnet_body"), _name),
    )


def recipe(backbone: str) -> BackboneRecipe:
    """The recipe of `backbone` (`model.backbone`); `UnknownName` (a ValueError) for an unknown name."""
    return BACKBONES.get(backbone).recipe


@dataclass(frozen=True)
class TopBlock:
    """An FPN's levels: `stages` (1-based ResNet stages) it reads, `levels` it outputs as (detectron2
    name, stride), finest first. torchvision names the outputs "0", "1", ... then the extra levels."""

    stages: tuple[int, ...]
    levels: tuple[tuple[str, int], ...]


# maxpool: P2-P5 and a max-pooled P6 (Mask R-CNN); p6p7: P3-P5 and convolved P6, P7 (RetinaNet)
TOP_BLOCKS = {
    "maxpool": TopBlock((1, 2, 3, 4), (("p2", 4), ("p3", 8), ("p4", 16), ("p5", 32), ("p6", 64))),
    "p6p7": TopBlock((2, 3, 4), (("p3", 8), ("p4", 16), ("p5", 32), ("p6", 64), ("p7", 128))),
}

# Anchors (both frameworks): one per FPN level, three aspect ratios.
ANCHOR_ASPECT_RATIOS = (0.5, 1.0, 2.0)


def anchor_base_size(min_size: int, first_stride: int) -> int:
    """Smallest anchor: 32 px at COCO scale (short side 800), shrunk with the image down to 8 px,
    but never below twice the stride of the level it sits on (`first_stride`). Anchors of one stride
    on a grid of that stride cover few objects at IoU >= 0.5: on the 128 px synthetic images, 8 px
    anchors on RetinaNet's P3 (stride 8) left 36 % of the objects without a positive anchor."""
    return max(int(round(32 * min(1.0, max(0.25, min_size / 800)))), 2 * first_stride)


def anchor_sizes(min_size: int, top_block: str, scales_per_octave: int) -> list[list[int]]:
    """Anchor sizes per level of `top_block`'s FPN: from `anchor_base_size`, doubling per level, and
    `scales_per_octave` sizes a level (2^(i/n) steps: Mask R-CNN 1, RetinaNet 3)."""
    levels = TOP_BLOCKS[top_block].levels
    base = anchor_base_size(min_size, levels[0][1])
    n = scales_per_octave
    return [[int(x * 2 ** (i / n)) for i in range(n)] for x in (base * 2**k for k in range(len(levels)))]
