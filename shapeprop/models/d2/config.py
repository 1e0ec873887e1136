"""detectron2 config keys of the plugin, and the translation from the experiment config.

`add_shapeprop_config(cfg)` adds three groups of keys:

- `MODEL.SHAPEPROP`: `ENABLED`, `ROIS_PER_IMAGE` (`model.shapeprop_rois_per_image`, 0 = all) and
  one key per field of `shapeprop.config.ShapePropConfig`, upper-cased (`PRESET`, `SALIENCY_LAYERS`,
  `LATENT_CHANNELS`, `MIL_LOSS`, ...). `PRESET` is "official"; every other field key is None, which
  takes the preset's value (so `PRESET: light` alone gives the light head); they are validated by
  that pydantic model when a model is built.
- `MODEL.RETINAMASK`: `MASK_IN_FEATURES`, `MASK_TRAIN_ROIS`, `MASK_FG_IOU` of the RetinaMask mask
  branch (defaults: the `retinamask` recipe of `shapeprop.models.detectors`).
- `MODEL.TORCHVISION_FPN`: `NAME`, `WEIGHTS`, `TOP_BLOCK` of the torchvision FPN backbone wrapper.
- `DATASETS.SHAPEPROP_MASK_CLASSES`: the classes that keep their masks in training (`train_net`).
"""

from __future__ import annotations

from importlib import resources

from detectron2.config import CfgNode
from detectron2.config import get_cfg as _d2_get_cfg
from pydantic import ValidationError

from shapeprop.config import ModelConfig, ShapePropConfig
from shapeprop.models.detectors import DETECTORS, RETINAMASK, MaskRCNNRecipe, RetinaMaskRecipe
from shapeprop.models.params import MASK_HEAD_CONVS
from shapeprop.models.recipes import (
    ANCHOR_ASPECT_RATIOS,
    TOP_BLOCKS,
    BackboneRecipe,
    anchor_sizes,
)
from shapeprop.models.transform import IMAGE_MEAN, IMAGE_STD

# torchvision's ImageNet normalisation, in 0-255 RGB (the torchvision backbones expect it)
RGB_PIXEL_MEAN = [x * 255 for x in IMAGE_MEAN]
RGB_PIXEL_STD = [x * 255 for x in IMAGE_STD]
TORCHVISION_BACKBONE = "build_torchvision_fpn_backbone"


def add_shapeprop_config(cfg: CfgNode) -> CfgNode:
    """Add the plugin's keys (see the module docstring) with their defaults to `cfg`; returns `cfg`."""
    cfg.MODEL.SHAPEPROP = CfgNode()
    cfg.MODEL.SHAPEPROP.ENABLED = True
    # One key per ShapePropConfig field; None = the preset's value (PRESET is set: "official").
    for name in ShapePropConfig.model_fields:
        cfg.MODEL.SHAPEPROP[name.upper()] = "official" if name == "preset" else None
    cfg.MODEL.SHAPEPROP.ROIS_PER_IMAGE = 0  # model.shapeprop_rois_per_image; 0 = every sampled RoI

    # train_net: keep masks only for these classes' annotations ("voc", "nonvoc", names; "" = all)
    cfg.DATASETS.SHAPEPROP_MASK_CLASSES = ""

    cfg.MODEL.RETINAMASK = CfgNode()
    cfg.MODEL.RETINAMASK.MASK_IN_FEATURES = RETINAMASK.roi_in_features()
    cfg.MODEL.RETINAMASK.MASK_TRAIN_ROIS = RETINAMASK.mask_train_rois
    cfg.MODEL.RETINAMASK.MASK_FG_IOU = RETINAMASK.mask_fg_iou

    cfg.MODEL.TORCHVISION_FPN = CfgNode()
    cfg.MODEL.TORCHVISION_FPN.NAME = "resnet50"  # a registered backbone (shapeprop.models.recipes.BACKBONES)
    cfg.MODEL.TORCHVISION_FPN.WEIGHTS = ""  # local checkpoint or torchvision weight name; "" = random
    cfg.MODEL.TORCHVISION_FPN.TOP_BLOCK = "maxpool"  # maxpool: p2-p6 (Mask R-CNN); p6p7: p3-p7 (RetinaNet)
    return cfg


def model_zoo_config_file(path: str) -> str:
    """The path of a config file of detectron2's model zoo (e.g.
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"), found without `detectron2.model_zoo`,
    which imports `pkg_resources` (no longer shipped by recent setuptools)."""
    file = resources.files("detectron2") / "model_zoo" / "configs" / path
    if not file.is_file():
        raise FileNotFoundError(f"detectron2's model-zoo config {path!r} is not installed (looked at {file})")
    return str(file)


def get_cfg() -> CfgNode:
    """detectron2's default config with the plugin's keys added."""
    return add_shapeprop_config(_d2_get_cfg())


def shapeprop_config_from_cfg(cfg: CfgNode) -> ShapePropConfig | None:
    """The `ShapePropConfig` that `cfg.MODEL.SHAPEPROP` describes, or None when it is disabled.

    Raises KeyError when `add_shapeprop_config` was not applied, ValueError naming the config key
    when a value is invalid.
    """
    if "SHAPEPROP" not in cfg.MODEL:
        raise KeyError("cfg.MODEL.SHAPEPROP is missing: call add_shapeprop_config(cfg) before building")
    node = cfg.MODEL.SHAPEPROP
    if not node.ENABLED:
        return None
    values = {
        name: node[name.upper()]
        for name in ShapePropConfig.model_fields
        if node.get(name.upper()) is not None  # None: the preset's value
    }
    try:
        return ShapePropConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"MODEL.SHAPEPROP.{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ValueError(f"invalid ShapeProp config: {problems}") from exc


def shapeprop_rois_per_image(cfg: CfgNode) -> int | None:
    """`MODEL.SHAPEPROP.ROIS_PER_IMAGE` as `model.shapeprop_rois_per_image` (0 -> None: all RoIs)."""
    return cfg.MODEL.SHAPEPROP.get("ROIS_PER_IMAGE", 0) or None


def _set_shapeprop(cfg: CfgNode, shapeprop: ShapePropConfig | None) -> None:
    cfg.MODEL.SHAPEPROP.ENABLED = shapeprop is not None
    if shapeprop is not None:
        for name, value in shapeprop.model_dump().items():
            cfg.MODEL.SHAPEPROP[name.upper()] = value


def config_from_model_config(
    model_cfg: ModelConfig,
    num_classes: int,
    min_size: int,
    max_size: int,
    score_thresh: float = 0.05,
    detections_per_img: int = 100,
) -> CfgNode:
    """The detectron2 config of the experiment's detector, mirroring the torchvision path's settings.

    Same backbone (the torchvision FPN, with `model.weights`), anchors, sampling sizes, head widths
    and test thresholds as `shapeprop.models.build.build_detector`: the values come from the same
    detector recipe (`shapeprop.models.detectors`, whose `detectron2` function sets the keys of the
    architecture) and backbone recipe (`shapeprop.models.recipes`); images arrive resized and in RGB.
    """
    if model_cfg.mask_transfer:
        raise ValueError(
            "model.mask_transfer (Mask^X R-CNN) is only available with model.framework 'torchvision'"
        )
    if model_cfg.pseudo_masks == "progressive":  # its pseudo-labelling reads torchvision model internals
        raise ValueError(
            "model.pseudo_masks 'progressive' is only available with model.framework 'torchvision'"
        )
    for key in ("compile", "channels_last"):  # applied to torchvision's modules by build_detector
        if getattr(model_cfg, key) not in ("none", False):
            raise ValueError(f"model.{key} is only available with model.framework 'torchvision'")
    detector = DETECTORS.get(model_cfg.arch)
    recipe = detector.recipe
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"  # the engine moves the model
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.BACKBONE.NAME = TORCHVISION_BACKBONE
    cfg.MODEL.TORCHVISION_FPN.NAME = model_cfg.backbone
    cfg.MODEL.TORCHVISION_FPN.WEIGHTS = model_cfg.weights or ""
    cfg.MODEL.TORCHVISION_FPN.TOP_BLOCK = recipe.top_block
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = list(RGB_PIXEL_MEAN)
    cfg.MODEL.PIXEL_STD = list(RGB_PIXEL_STD)
    cfg.INPUT.MIN_SIZE_TRAIN = (min_size,)
    cfg.INPUT.MIN_SIZE_TEST = min_size
    cfg.INPUT.MAX_SIZE_TRAIN = cfg.INPUT.MAX_SIZE_TEST = max_size
    cfg.TEST.DETECTIONS_PER_IMAGE = detections_per_img
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = anchor_sizes(
        min_size, recipe.top_block, recipe.anchor_scales_per_octave
    )
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [list(ANCHOR_ASPECT_RATIOS)]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes  # also read by the mask head of RetinaMask

    mask = cfg.MODEL.ROI_MASK_HEAD
    mask.NAME = "MaskRCNNConvUpsampleHead"
    mask.NUM_CONV = MASK_HEAD_CONVS
    mask.CONV_DIM = model_cfg.mask_head_width()
    mask.POOLER_RESOLUTION = recipe.mask_pooler_resolution
    mask.POOLER_SAMPLING_RATIO = recipe.pooler_sampling_ratio
    mask.POOLER_TYPE = "ROIAlign"  # torchvision's MultiScaleRoIAlign: aligned=False
    mask.CLS_AGNOSTIC_MASK = model_cfg.class_agnostic_masks
    _set_shapeprop(cfg, model_cfg.shapeprop)
    cfg.MODEL.SHAPEPROP.ROIS_PER_IMAGE = model_cfg.shapeprop_rois_per_image or 0

    detector.detectron2(cfg, recipe, model_cfg.backbone_recipe(), num_classes, score_thresh)
    cfg.freeze()
    return cfg


def matcher_keys(bg_iou_thresh: float, fg_iou_thresh: float) -> tuple[list[float], list[int]]:
    """torchvision's matching (IoU < bg: background, >= fg: foreground, between: ignored) as a
    detectron2 Matcher's `IOU_THRESHOLDS` and `IOU_LABELS`."""
    if bg_iou_thresh == fg_iou_thresh:
        return [fg_iou_thresh], [0, 1]
    return [bg_iou_thresh, fg_iou_thresh], [0, -1, 1]


def mask_rcnn_config(
    cfg: CfgNode, recipe: MaskRCNNRecipe, sizes: BackboneRecipe, num_classes: int, score_thresh: float
) -> None:
    """The keys of Mask R-CNN (`shapeprop.models.detectors`, "mask_rcnn")."""
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    rpn = cfg.MODEL.RPN
    rpn.IN_FEATURES = [name for name, _ in TOP_BLOCKS[recipe.top_block].levels]
    rpn.IOU_THRESHOLDS, rpn.IOU_LABELS = matcher_keys(recipe.rpn_bg_iou_thresh, recipe.rpn_fg_iou_thresh)
    rpn.BATCH_SIZE_PER_IMAGE = sizes.rpn_batch_size_per_image
    rpn.POSITIVE_FRACTION = recipe.rpn_positive_fraction
    rpn.PRE_NMS_TOPK_TRAIN, rpn.PRE_NMS_TOPK_TEST = sizes.rpn_pre_nms_top_n
    rpn.POST_NMS_TOPK_TRAIN, rpn.POST_NMS_TOPK_TEST = sizes.rpn_post_nms_top_n
    rpn.NMS_THRESH = recipe.rpn_nms_thresh
    heads = cfg.MODEL.ROI_HEADS
    heads.NAME = "ShapePropROIHeads"
    heads.IN_FEATURES = recipe.roi_in_features()
    heads.IOU_THRESHOLDS, heads.IOU_LABELS = matcher_keys(recipe.box_bg_iou_thresh, recipe.box_fg_iou_thresh)
    heads.BATCH_SIZE_PER_IMAGE = sizes.box_batch_size_per_image
    heads.POSITIVE_FRACTION = recipe.box_positive_fraction
    heads.SCORE_THRESH_TEST = score_thresh
    heads.NMS_THRESH_TEST = recipe.box_nms_thresh
    box = cfg.MODEL.ROI_BOX_HEAD
    box.NAME = "FastRCNNConvFCHead"  # torchvision's TwoMLPHead: two FC layers, no conv
    box.NUM_CONV = 0
    box.NUM_FC = 2
    box.FC_DIM = sizes.box_head_channels
    box.POOLER_RESOLUTION = recipe.box_pooler_resolution
    box.POOLER_SAMPLING_RATIO = recipe.pooler_sampling_ratio
    box.POOLER_TYPE = "ROIAlign"


def retinamask_config(
    cfg: CfgNode, recipe: RetinaMaskRecipe, sizes: BackboneRecipe, num_classes: int, score_thresh: float
) -> None:
    """The keys of RetinaMask (`shapeprop.models.detectors`, "retinamask")."""
    cfg.MODEL.META_ARCHITECTURE = "RetinaMask"
    retina = cfg.MODEL.RETINANET
    retina.NUM_CLASSES = num_classes
    retina.IN_FEATURES = [name for name, _ in TOP_BLOCKS[recipe.top_block].levels]
    retina.IOU_THRESHOLDS, retina.IOU_LABELS = matcher_keys(recipe.bg_iou_thresh, recipe.fg_iou_thresh)
    retina.SCORE_THRESH_TEST = score_thresh
    retina.TOPK_CANDIDATES_TEST = sizes.retinanet_topk_candidates
    retina.NMS_THRESH_TEST = recipe.nms_thresh
    cfg.MODEL.RETINAMASK.MASK_IN_FEATURES = recipe.roi_in_features()
    cfg.MODEL.RETINAMASK.MASK_TRAIN_ROIS = recipe.mask_train_rois
    cfg.MODEL.RETINAMASK.MASK_FG_IOU = recipe.mask_fg_iou
