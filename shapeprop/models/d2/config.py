"""detectron2 config keys of the plugin, and the translation from the experiment config.

`add_shapeprop_config(cfg)` adds three groups of keys:

- `MODEL.SHAPEPROP`: `ENABLED`, `ROIS_PER_IMAGE` (`model.shapeprop_rois_per_image`, 0 = all) and
  one key per field of `shapeprop.config.ShapePropConfig`, upper-cased (`PRESET`, `SALIENCY_LAYERS`,
  `LATENT_CHANNELS`, `MIL_LOSS`, ...). `PRESET` is "official"; every other field key is None, which
  takes the preset's value (so `PRESET: light` alone gives the light head); they are validated by
  that pydantic model when a model is built.
- `MODEL.RETINAMASK`: `MASK_IN_FEATURES`, `MASK_TRAIN_ROIS`, `MASK_FG_IOU` of the RetinaMask mask branch.
- `MODEL.TORCHVISION_FPN`: `NAME`, `WEIGHTS`, `TOP_BLOCK` of the torchvision FPN backbone wrapper.
- `DATASETS.SHAPEPROP_MASK_CLASSES`: the classes that keep their masks in training (`train_net`).
"""

from __future__ import annotations

from importlib import resources

from detectron2.config import CfgNode
from detectron2.config import get_cfg as _d2_get_cfg
from pydantic import ValidationError

from shapeprop.config import ModelConfig, ShapePropConfig
from shapeprop.models.recipes import (
    ANCHOR_ASPECT_RATIOS,
    default_mask_head_channels,
    mask_rcnn_anchor_sizes,
    recipe_of,
    retinanet_anchor_sizes,
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
    cfg.MODEL.RETINAMASK.MASK_IN_FEATURES = ["p3", "p4", "p5"]
    cfg.MODEL.RETINAMASK.MASK_TRAIN_ROIS = 64  # top detections per image the mask branch trains on
    cfg.MODEL.RETINAMASK.MASK_FG_IOU = 0.5  # IoU with a GT box that makes such a RoI positive

    cfg.MODEL.TORCHVISION_FPN = CfgNode()
    cfg.MODEL.TORCHVISION_FPN.NAME = "resnet50"  # tiny | resnet18 | resnet50 | resnet101
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
    and test thresholds as `shapeprop.models.build.build_detector`: the sizes come from the same
    backbone recipe (`shapeprop.models.recipes`); images arrive resized and in RGB.
    """
    if model_cfg.mask_transfer:
        raise ValueError(
            "model.mask_transfer (Mask^X R-CNN) is only available with model.framework 'torchvision'"
        )
    if model_cfg.pseudo_masks == "progressive":  # its pseudo-labelling reads torchvision model internals
        raise ValueError(
            "model.pseudo_masks 'progressive' is only available with model.framework 'torchvision'"
        )
    sizes = recipe_of(model_cfg)
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"  # the engine moves the model
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.BACKBONE.NAME = TORCHVISION_BACKBONE
    cfg.MODEL.TORCHVISION_FPN.NAME = model_cfg.backbone
    cfg.MODEL.TORCHVISION_FPN.WEIGHTS = model_cfg.weights or ""
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = list(RGB_PIXEL_MEAN)
    cfg.MODEL.PIXEL_STD = list(RGB_PIXEL_STD)
    cfg.INPUT.MIN_SIZE_TRAIN = (min_size,)
    cfg.INPUT.MIN_SIZE_TEST = min_size
    cfg.INPUT.MAX_SIZE_TRAIN = cfg.INPUT.MAX_SIZE_TEST = max_size
    cfg.TEST.DETECTIONS_PER_IMAGE = detections_per_img
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [list(ANCHOR_ASPECT_RATIOS)]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes  # also read by the mask head of RetinaMask

    mask = cfg.MODEL.ROI_MASK_HEAD
    mask.NAME = "MaskRCNNConvUpsampleHead"
    mask.NUM_CONV = 4
    mask.CONV_DIM = default_mask_head_channels(model_cfg)
    mask.POOLER_RESOLUTION = 14
    mask.POOLER_SAMPLING_RATIO = 2
    mask.POOLER_TYPE = "ROIAlign"  # torchvision's MultiScaleRoIAlign: aligned=False
    mask.CLS_AGNOSTIC_MASK = model_cfg.class_agnostic_masks
    _set_shapeprop(cfg, model_cfg.shapeprop)
    cfg.MODEL.SHAPEPROP.ROIS_PER_IMAGE = model_cfg.shapeprop_rois_per_image or 0

    if model_cfg.arch == "mask_rcnn":
        cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
        cfg.MODEL.TORCHVISION_FPN.TOP_BLOCK = "maxpool"
        cfg.MODEL.ANCHOR_GENERATOR.SIZES = mask_rcnn_anchor_sizes(min_size)
        rpn = cfg.MODEL.RPN
        rpn.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
        rpn.IOU_THRESHOLDS = [0.3, 0.7]
        rpn.BATCH_SIZE_PER_IMAGE = sizes.rpn_batch_size_per_image
        rpn.POSITIVE_FRACTION = 0.5
        rpn.PRE_NMS_TOPK_TRAIN, rpn.PRE_NMS_TOPK_TEST = sizes.rpn_pre_nms_top_n
        rpn.POST_NMS_TOPK_TRAIN, rpn.POST_NMS_TOPK_TEST = sizes.rpn_post_nms_top_n
        rpn.NMS_THRESH = 0.7
        heads = cfg.MODEL.ROI_HEADS
        heads.NAME = "ShapePropROIHeads"
        heads.IN_FEATURES = ["p2", "p3", "p4", "p5"]
        heads.IOU_THRESHOLDS = [0.5]
        heads.BATCH_SIZE_PER_IMAGE = sizes.box_batch_size_per_image
        heads.POSITIVE_FRACTION = 0.25
        heads.SCORE_THRESH_TEST = score_thresh
        heads.NMS_THRESH_TEST = 0.5
        box = cfg.MODEL.ROI_BOX_HEAD
        box.NAME = "FastRCNNConvFCHead"
        box.NUM_CONV = 0
        box.NUM_FC = 2
        box.FC_DIM = sizes.box_head_channels
        box.POOLER_RESOLUTION = 7
        box.POOLER_SAMPLING_RATIO = 2
        box.POOLER_TYPE = "ROIAlign"
    elif model_cfg.arch == "retinamask":
        cfg.MODEL.META_ARCHITECTURE = "RetinaMask"
        cfg.MODEL.TORCHVISION_FPN.TOP_BLOCK = "p6p7"
        cfg.MODEL.ANCHOR_GENERATOR.SIZES = retinanet_anchor_sizes(min_size)
        retina = cfg.MODEL.RETINANET
        retina.NUM_CLASSES = num_classes
        retina.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
        retina.SCORE_THRESH_TEST = score_thresh
        retina.TOPK_CANDIDATES_TEST = sizes.retinanet_topk_candidates
        retina.NMS_THRESH_TEST = 0.5
        cfg.MODEL.RETINAMASK.MASK_IN_FEATURES = ["p3", "p4", "p5"]
    else:
        raise ValueError(f"model.arch: unknown architecture {model_cfg.arch!r}")
    cfg.freeze()
    return cfg
