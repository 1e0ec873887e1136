"""Per-backbone detector recipes: every size that depends on the backbone, written once.

The tiny backbone (`shapeprop.models.tiny`) runs the CPU miniatures, so its detectors use fewer
proposals and sampled RoIs and narrower heads; the ResNets use the Detectron / torchvision sizes.
`recipe(name)` (with `model.sizes` applied: `recipe_of(model_cfg)`) is read by every builder: the backbones (FPN width), torchvision's Mask R-CNN and
RetinaMask (RPN, box head, RetinaNet candidates), the mask branch (mask head width), the closed-form
parameter counts (`shapeprop.models.params`) and the detectron2 config (`shapeprop.models.d2.config`).

The anchors do not depend on the backbone but on the input scale; they are here too, so that both
frameworks take them from one place. This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shapeprop.config import ModelConfig


# The `model.weights` name of the tiny backbone's pretrained stand-in (shapeprop.models.pretrain),
# here so that torch-free code (preflight) can recognise it.
SYNTHETIC_PRETRAINED = "synthetic-pretrained"


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


_RESNET = dict(
    fpn_channels=256,
    mask_head_channels=256,
    rpn_pre_nms_top_n=(2000, 1000),
    rpn_post_nms_top_n=(2000, 1000),
    rpn_batch_size_per_image=256,
    box_batch_size_per_image=512,
    box_head_channels=1024,
    retinanet_topk_candidates=1000,
)

RECIPES: dict[str, BackboneRecipe] = {
    "tiny": BackboneRecipe(
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
    **{name: BackboneRecipe(name=name, **_RESNET) for name in ("resnet18", "resnet50", "resnet101")},
}


def recipe(backbone: str) -> BackboneRecipe:
    """The recipe of `backbone` (`model.backbone`); ValueError for an unknown name."""
    if backbone not in RECIPES:
        raise ValueError(f"model.backbone: unknown backbone {backbone!r}")
    return RECIPES[backbone]


def recipe_of(model_cfg: ModelConfig) -> BackboneRecipe:
    """The recipe of the model's backbone with the sizes `model.sizes` sets in place of its own."""
    base = recipe(model_cfg.backbone)
    if model_cfg.sizes is None:
        return base
    return replace(base, **model_cfg.sizes.model_dump(exclude_none=True))


def default_mask_head_channels(model_cfg: ModelConfig) -> int:
    """The mask head width: `model.mask_head_channels`, else the backbone recipe's."""
    if model_cfg.mask_head_channels is not None:
        return model_cfg.mask_head_channels
    return recipe_of(model_cfg).mask_head_channels


# Anchors (both frameworks): five FPN levels, three aspect ratios.
ANCHOR_ASPECT_RATIOS = (0.5, 1.0, 2.0)
ANCHOR_LEVELS = 5


def anchor_base_size(min_size: int, first_stride: int) -> int:
    """Smallest anchor: 32 px at COCO scale (short side 800), shrunk with the image down to 8 px,
    but never below twice the stride of the level it sits on (`first_stride`). Anchors of one stride
    on a grid of that stride cover few objects at IoU >= 0.5: on the 128 px synthetic images, 8 px
    anchors on RetinaNet's P3 (stride 8) left 36 % of the objects without a positive anchor."""
    return max(int(round(32 * min(1.0, max(0.25, min_size / 800)))), 2 * first_stride)


def mask_rcnn_anchor_sizes(min_size: int) -> list[list[int]]:
    """One anchor size per level (P2-P6, the first at stride 4), doubling from `anchor_base_size`."""
    base = anchor_base_size(min_size, 4)
    return [[base * 2**i] for i in range(ANCHOR_LEVELS)]


def retinanet_anchor_sizes(min_size: int) -> list[list[int]]:
    """Three sizes per level (P3-P7, the first at stride 8), 2^0, 2^(1/3), 2^(2/3) octave steps, as
    RetinaNet."""
    base = anchor_base_size(min_size, 8)
    return [
        [x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))] for x in (base * 2**i for i in range(ANCHOR_LEVELS))
    ]
