"""The detector and backbone registries: `model.arch` / `model.backbone` validated against them, and a
detector or backbone registered from outside the library (one registration, no edit of the config,
the builders or the harness) built from its recipe.

Both frameworks read one recipe: for each built-in detector and for the registered variant, the
torchvision model and the detectron2 model built from the same `ModelConfig` match, label and sample
the same way, keep the same candidates, and pool the same levels at the same sizes (those tests run
only where detectron2 is importable).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from pydantic import ValidationError

from shapeprop.config import ModelConfig, ShapePropConfig
from shapeprop.models.build import build_detector
from shapeprop.models.detectors import DETECTORS, MASK_RCNN
from shapeprop.models.mask_branch import find_mask_branch
from shapeprop.models.params import mask_branch_params, param_counts, widened_mask_head_channels
from shapeprop.models.recipes import BACKBONES, recipe, register_backbone

NUM_CLASSES = 3
SIZE = 64
VARIANT = "mask_rcnn_strict"  # Mask R-CNN whose RoIs between IoU 0.4 and 0.6 are ignored
NARROW = "tiny_narrow"  # the tiny body under a narrower FPN and heads
NARROW_SIZES = dict(fpn_channels=32, mask_head_channels=16, box_head_channels=48, box_batch_size_per_image=40)


@pytest.fixture
def variant_detector():
    strict = replace(MASK_RCNN, box_fg_iou_thresh=0.6, box_bg_iou_thresh=0.4, box_pooler_resolution=5)
    DETECTORS.register(VARIANT, replace(DETECTORS.get("mask_rcnn"), recipe=strict), source="tests")
    yield strict
    DETECTORS.unregister(VARIANT)


@pytest.fixture
def narrow_backbone():
    tiny = BACKBONES.get("tiny")
    register_backbone(replace(tiny.recipe, name=NARROW, **NARROW_SIZES), tiny.body, source="tests")
    yield BACKBONES.get(NARROW)
    BACKBONES.unregister(NARROW)


@pytest.mark.parametrize(
    "field, value, message",
    [
        (
            "arch",
            "mask_rnn",
            "unknown detector 'mask_rnn' (did you mean 'mask_rcnn'?); known: mask_rcnn, retinamask",
        ),
        (
            "backbone",
            "resnet05",
            "unknown backbone 'resnet05' (did you mean 'resnet50'?); known: tiny, resnet18, resnet50, resnet101",
        ),
    ],
)
def test_a_misspelt_arch_or_backbone_fails_validation(field, value, message):
    with pytest.raises(ValidationError) as err:
        ModelConfig(**{field: value})
    assert message in str(err.value)
    assert err.value.errors()[0]["loc"] == (field,)


def test_defaults_and_serialised_form_are_unchanged():
    cfg = ModelConfig()
    assert (cfg.arch, cfg.backbone) == ("mask_rcnn", "resnet50")
    assert ModelConfig.model_validate(cfg.model_dump(mode="json")) == cfg
    assert cfg.model_dump(mode="json")["arch"] == "mask_rcnn"


def _roi_labels(model, ious: list[float]) -> list[int]:
    """The RoI heads' training label of one proposal per IoU with a single GT box of class 2
    (2: foreground, 0: background, -1: ignored)."""
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    proposals = torch.tensor([[0.0, 0.0, 10.0, 10.0 * iou] for iou in ious])
    _, labels = model.roi_heads.assign_targets_to_proposals([proposals], [gt], [torch.tensor([2])])
    return labels[0].tolist()


def test_a_detector_registered_from_outside_is_built_with_its_recipe(variant_detector):
    cfg = ModelConfig(arch=VARIANT, backbone="tiny")  # validates: no edit of shapeprop.config
    variant = build_detector(cfg, NUM_CLASSES, SIZE, SIZE).train()
    plain = build_detector(cfg.model_copy(update={"arch": "mask_rcnn"}), NUM_CLASSES, SIZE, SIZE).train()
    ious = [0.3, 0.45, 0.55, 0.65]
    assert _roi_labels(plain, ious) == [0, 0, 2, 2]  # the built-in: foreground from IoU 0.5
    assert _roi_labels(variant, ious) == [0, -1, -1, 2]  # the variant: ignored between 0.4 and 0.6
    assert variant.roi_heads.proposal_matcher.high_threshold == variant_detector.box_fg_iou_thresh == 0.6
    assert variant.roi_heads.proposal_matcher.low_threshold == variant_detector.box_bg_iou_thresh == 0.4
    # the box pooler's 5x5 output feeds the box head's first layer
    channels = variant.backbone.out_channels
    assert variant.roi_heads.box_roi_pool.output_size == (5, 5)
    assert variant.roi_heads.box_head.fc6.in_features == channels * 5 * 5
    assert plain.roi_heads.box_head.fc6.in_features == channels * 7 * 7
    images = [torch.rand(3, SIZE, SIZE)]
    target = {
        "boxes": torch.tensor([[8.0, 8.0, 40.0, 48.0]]),
        "labels": torch.tensor([2]),
        "masks": torch.zeros(1, SIZE, SIZE, dtype=torch.uint8),
    }
    losses = variant(images, [target])
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())


def test_a_misspelt_registered_variant_is_suggested(variant_detector):
    with pytest.raises(ValidationError, match=f"did you mean '{VARIANT}'"):
        ModelConfig(arch="mask_rcnn_strikt")


@pytest.mark.parametrize("arch", ["mask_rcnn", "retinamask"])
def test_a_backbone_registered_from_outside_sizes_both_detectors(narrow_backbone, arch):
    sp = ShapePropConfig(preset="light")
    cfg = ModelConfig(arch=arch, backbone=NARROW, shapeprop=sp)
    model = build_detector(cfg, NUM_CLASSES, SIZE, SIZE)
    assert model.backbone.out_channels == 32
    assert find_mask_branch(model).predictor.conv5_mask.out_channels == 16
    if arch == "mask_rcnn":
        assert model.roi_heads.box_head.fc7.out_features == 48
        assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 40
    # the torch-free closed form (Table 4's widened head) reads the registered backbone too
    counts = param_counts(model)
    assert mask_branch_params(32, NUM_CLASSES, 16, False, sp) == {
        "mask_head": counts["mask_head"],
        "shapeprop": counts["shapeprop"],
    }
    assert widened_mask_head_channels(cfg, NUM_CLASSES) != widened_mask_head_channels(
        cfg.model_copy(update={"backbone": "tiny"}), NUM_CLASSES
    )
    assert recipe(NARROW).fpn_channels == 32


def test_mask_transfer_is_refused_for_a_detector_without_it():
    with pytest.raises(ValueError, match="model.mask_transfer.*retinamask"):
        build_detector(
            ModelConfig(arch="retinamask", backbone="tiny", mask_transfer=True), NUM_CLASSES, SIZE, SIZE
        )


# --- both frameworks (detectron2) ---

SCORE, DETECTIONS = 0.07, 55


@pytest.fixture
def d2():
    pytest.importorskip(
        "detectron2", reason="needs detectron2, which is not installed (build it from source)"
    )
    from shapeprop.models import d2

    return d2


def _labels_tv(matcher, iou: torch.Tensor) -> torch.Tensor:
    """torchvision's matches as labels: 1 foreground, 0 background (-1), -1 ignored (-2)."""
    matches = matcher(iou)
    return torch.where(matches >= 0, 1, torch.where(matches == matcher.BELOW_LOW_THRESHOLD, 0, -1))


def _same_matching(tv_matcher, d2_matcher) -> None:
    torch.manual_seed(0)
    iou = torch.rand(3, 400)
    iou[:, :8] = torch.tensor([0.0, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7])  # on and around the thresholds
    _, d2_labels = d2_matcher(iou)
    assert torch.equal(_labels_tv(tv_matcher, iou), d2_labels)
    thresholds = d2_matcher.thresholds[1:-1]  # detectron2 pads them with -inf, inf
    assert thresholds == sorted({tv_matcher.low_threshold, tv_matcher.high_threshold})
    assert tv_matcher.allow_low_quality_matches == d2_matcher.allow_low_quality_matches


def _tv_strides(model, names: list[str]) -> list[float]:
    """Strides of the torchvision FPN outputs `names`, measured on a SIZE x SIZE input."""
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, SIZE, SIZE))
    return [SIZE / features[n].shape[-1] for n in names]


def _same_pooler(tv_model, tv_pool, d2_pool) -> None:
    assert tuple(tv_pool.output_size) == tuple(d2_pool.output_size)
    assert {p.sampling_ratio for p in d2_pool.level_poolers} == {tv_pool.sampling_ratio}
    assert _tv_strides(tv_model, tv_pool.featmap_names) == [
        1 / p.spatial_scale for p in d2_pool.level_poolers
    ]


def _same_anchors(tv_generator, d2_generator) -> None:
    """Per level the same sizes (detectron2 keeps each anchor's area at size^2) and aspect ratios."""
    assert len(tv_generator.sizes) == len(d2_generator.cell_anchors)
    for sizes, ratios, cell in zip(
        tv_generator.sizes, tv_generator.aspect_ratios, d2_generator.cell_anchors, strict=True
    ):
        w, h = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
        assert sorted({round(float(s)) for s in (w * h).sqrt()}) == sorted(sizes)
        assert sorted({round(float(r), 4) for r in h / w}) == sorted(ratios)


def _build_both(d2, arch: str, backbone: str = "tiny"):
    cfg = ModelConfig(arch=arch, backbone=backbone, shapeprop=ShapePropConfig(preset="light"))
    tv = build_detector(cfg, NUM_CLASSES, SIZE, SIZE, SCORE, DETECTIONS)
    det = d2.build_detectron2_detector(
        cfg.model_copy(update={"framework": "detectron2"}), NUM_CLASSES, SIZE, SIZE, SCORE, DETECTIONS
    )
    return tv, det.model


def _check_mask_rcnn(tv, model, recipe) -> None:
    rpn, proposals = tv.rpn, model.proposal_generator
    _same_anchors(rpn.anchor_generator, proposals.anchor_generator)
    _same_matching(rpn.proposal_matcher, proposals.anchor_matcher)
    assert (rpn.proposal_matcher.low_threshold, rpn.proposal_matcher.high_threshold) == (
        recipe.rpn_bg_iou_thresh,
        recipe.rpn_fg_iou_thresh,
    )
    assert rpn.fg_bg_sampler.positive_fraction == proposals.positive_fraction == recipe.rpn_positive_fraction
    assert rpn.fg_bg_sampler.batch_size_per_image == proposals.batch_size_per_image
    assert rpn.nms_thresh == proposals.nms_thresh == recipe.rpn_nms_thresh
    assert [rpn._pre_nms_top_n[k] for k in ("training", "testing")] == [
        proposals.pre_nms_topk[k] for k in (True, False)
    ]
    assert [rpn._post_nms_top_n[k] for k in ("training", "testing")] == [
        proposals.post_nms_topk[k] for k in (True, False)
    ]
    heads, roi_heads = tv.roi_heads, model.roi_heads
    _same_matching(heads.proposal_matcher, roi_heads.proposal_matcher)
    assert (heads.proposal_matcher.low_threshold, heads.proposal_matcher.high_threshold) == (
        recipe.box_bg_iou_thresh,
        recipe.box_fg_iou_thresh,
    )
    assert (
        heads.fg_bg_sampler.positive_fraction == roi_heads.positive_fraction == recipe.box_positive_fraction
    )
    assert heads.fg_bg_sampler.batch_size_per_image == roi_heads.batch_size_per_image
    predictor = roi_heads.box_predictor
    assert heads.nms_thresh == predictor.test_nms_thresh == recipe.box_nms_thresh
    assert (heads.score_thresh, heads.detections_per_img) == (
        predictor.test_score_thresh,
        predictor.test_topk_per_image,
    )
    assert heads.box_roi_pool.output_size == (recipe.box_pooler_resolution,) * 2
    _same_pooler(tv, heads.box_roi_pool, roi_heads.box_pooler)
    _same_pooler(tv, find_mask_branch(tv).roi_pool, roi_heads.mask_pooler)


def _check_retinamask(tv, model, recipe) -> None:
    _same_anchors(tv.anchor_generator, model.anchor_generator)
    _same_matching(tv.proposal_matcher, model.anchor_matcher)
    assert (tv.proposal_matcher.low_threshold, tv.proposal_matcher.high_threshold) == (
        recipe.bg_iou_thresh,
        recipe.fg_iou_thresh,
    )
    assert tv.nms_thresh == model.test_nms_thresh == recipe.nms_thresh
    assert tv.topk_candidates == model.test_topk_candidates
    assert (tv.score_thresh, tv.detections_per_img) == (
        model.test_score_thresh,
        model.max_detections_per_image,
    )
    assert tv.mask_train_rois == model.mask_train_rois == recipe.mask_train_rois
    assert tv.mask_fg_iou == model.mask_fg_iou == recipe.mask_fg_iou
    _same_pooler(tv, find_mask_branch(tv).roi_pool, model.mask_pooler)


CHECKS = {"mask_rcnn": _check_mask_rcnn, "retinamask": _check_retinamask, VARIANT: _check_mask_rcnn}


@pytest.mark.detectron2
@pytest.mark.parametrize("arch", ["mask_rcnn", "retinamask", VARIANT])
def test_both_frameworks_take_the_same_settings_from_the_recipe(d2, arch, variant_detector):
    tv, model = _build_both(d2, arch)
    recipe = DETECTORS.get(arch).recipe
    assert find_mask_branch(tv).roi_pool.output_size == (recipe.mask_pooler_resolution,) * 2
    CHECKS[arch](tv, model, recipe)


@pytest.mark.detectron2
def test_the_variant_recipe_reaches_detectron2(d2, variant_detector):
    cfg = ModelConfig(framework="detectron2", arch=VARIANT, backbone="tiny")
    variant = d2.config_from_model_config(cfg, NUM_CLASSES, SIZE, SIZE)
    plain = d2.config_from_model_config(cfg.model_copy(update={"arch": "mask_rcnn"}), NUM_CLASSES, SIZE, SIZE)
    assert (plain.MODEL.ROI_HEADS.IOU_THRESHOLDS, plain.MODEL.ROI_HEADS.IOU_LABELS) == ([0.5], [0, 1])
    assert (variant.MODEL.ROI_HEADS.IOU_THRESHOLDS, variant.MODEL.ROI_HEADS.IOU_LABELS) == (
        [0.4, 0.6],
        [0, -1, 1],
    )
    assert (plain.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION, variant.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION) == (
        7,
        5,
    )


@pytest.mark.detectron2
@pytest.mark.parametrize("arch", ["mask_rcnn", "retinamask"])
def test_a_registered_backbone_is_the_same_in_both_frameworks(d2, narrow_backbone, arch):
    tv, model = _build_both(d2, arch, NARROW)
    assert model.backbone.fpn.out_channels == tv.backbone.out_channels == narrow_backbone.recipe.fpn_channels
    own = sum(p.numel() for p in model.backbone.parameters())
    assert own == sum(p.numel() for p in tv.backbone.parameters())


@pytest.mark.detectron2
def test_an_unknown_backbone_in_a_detectron2_config_names_the_known_ones(d2):
    cfg = d2.config_from_model_config(ModelConfig(backbone="tiny"), NUM_CLASSES, SIZE, SIZE).clone()
    cfg.defrost()
    cfg.MODEL.TORCHVISION_FPN.NAME = "tinny"
    from detectron2.modeling import build_model

    with pytest.raises(
        ValueError, match=r"TORCHVISION_FPN.NAME: unknown backbone 'tinny' \(did you mean 'tiny'\?\)"
    ):
        build_model(cfg)
