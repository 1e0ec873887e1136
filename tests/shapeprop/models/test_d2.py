"""The detectron2 plugin: config keys, both architectures built from a config, training on the
synthetic set, detectron2's `Instances` output, the same ShapeProp size as the torchvision path, and
the harness's engine and evaluation driving a detectron2 model.

Runs only where detectron2 is importable (built from source); skipped otherwise.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.detectron2
pytest.importorskip("detectron2", reason="needs detectron2, which is not installed (build it from source)")

from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from shapeprop.config import (  # noqa: E402
    DataConfig,
    DetectorSizes,
    MaskSupervision,
    ModelConfig,
    ScheduleConfig,
    ShapePropConfig,
)
from shapeprop.data import catalog  # noqa: E402
from shapeprop.data.loading import DetectionDataset, collate  # noqa: E402
from shapeprop.data.masks import annotation_to_mask  # noqa: E402
from shapeprop.data.splits import apply_mask_supervision  # noqa: E402
from shapeprop.models import d2  # noqa: E402
from shapeprop.models.build import build_detector  # noqa: E402
from shapeprop.models.params import param_counts as torchvision_param_counts  # noqa: E402
from tests.helpers import ROOT  # noqa: E402

SIZE = 64
ARCHS = ["mask_rcnn", "retinamask"]


def _model_cfg(arch: str, shapeprop: bool = True, **kw) -> ModelConfig:
    return ModelConfig(
        framework="detectron2",
        arch=arch,
        backbone="tiny",
        shapeprop=ShapePropConfig() if shapeprop else None,
        **kw,
    )


def _mask_head_in_channels(head: torch.nn.Module) -> int:
    """Input channels of the mask head's first (conv or deconv) layer."""
    first = next(m for m in head.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)))
    return first.in_channels


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """8 synthetic training images; masks only for the 'voc' shapes (category-wise semi-supervision)."""
    root = tmp_path_factory.mktemp("synthetic")
    data = catalog.load("synthetic", root, "train", num_images=8, image_size=SIZE)
    spec = MaskSupervision(kind="categories", classes="voc")
    records = apply_mask_supervision(data.records, data.metadata, spec, seed=0)
    flags = [a["has_mask"] for r in records for a in r["annotations"]]
    assert any(flags) and not all(flags)
    return records, data.metadata, root


@pytest.fixture(scope="module")
def batch(synthetic):
    records = synthetic[0]
    dataset = DetectionDataset(records, SIZE, SIZE, hflip=False, train=True)
    return collate([dataset[i] for i in range(2)])


def test_config_keys_mirror_shapeprop_config(tmp_path):
    cfg = d2.get_cfg()
    for name in ShapePropConfig.model_fields:  # None: the preset's value
        assert cfg.MODEL.SHAPEPROP[name.upper()] == ("official" if name == "preset" else None)
    assert d2.shapeprop_config_from_cfg(cfg) == ShapePropConfig()
    cfg.merge_from_list(["MODEL.SHAPEPROP.PRESET", "light"])  # the preset alone picks the head
    assert d2.shapeprop_config_from_cfg(cfg) == ShapePropConfig(preset="light")
    cfg.merge_from_list(["MODEL.SHAPEPROP.PRESET", "official"])

    cfg.merge_from_list(["MODEL.SHAPEPROP.STEPS", 5, "MODEL.SHAPEPROP.CHANNEL_AGNOSTIC", True])
    path = tmp_path / "cfg.yaml"
    path.write_text(cfg.dump())
    loaded = d2.get_cfg()
    loaded.merge_from_file(str(path))
    assert d2.shapeprop_config_from_cfg(loaded) == ShapePropConfig(steps=5, channel_agnostic=True)

    loaded.MODEL.SHAPEPROP.STEPS = 0
    with pytest.raises(ValueError, match="MODEL.SHAPEPROP.STEPS"):
        d2.shapeprop_config_from_cfg(loaded)
    loaded.MODEL.SHAPEPROP.ENABLED = False
    assert d2.shapeprop_config_from_cfg(loaded) is None
    with pytest.raises(KeyError, match="add_shapeprop_config"):
        from detectron2.config import get_cfg

        d2.shapeprop_config_from_cfg(get_cfg())


@pytest.mark.parametrize("arch", ARCHS)
def test_build_from_config(arch):
    cfg = d2.get_cfg()  # a hand-written detectron2 config, as a detectron2 user writes one
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.MASK_ON", True,
            "MODEL.BACKBONE.NAME", "build_torchvision_fpn_backbone",
            "MODEL.TORCHVISION_FPN.NAME", "tiny",
            "MODEL.ANCHOR_GENERATOR.SIZES", [[16], [32], [64], [128], [256]],
            "MODEL.ROI_MASK_HEAD.NUM_CONV", 4,
            "MODEL.SHAPEPROP.PRIOR_CHANNELS", 8,
        ]
    )  # fmt: skip
    if arch == "mask_rcnn":
        cfg.MODEL.ROI_HEADS.NAME = "ShapePropROIHeads"
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = 7
        cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
        cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
        cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
        cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    else:  # RetinaMask takes its class count from RETINANET (ROI_HEADS keeps its default 80)
        cfg.MODEL.META_ARCHITECTURE = "RetinaMask"
        cfg.MODEL.RETINANET.NUM_CLASSES = 7
        cfg.MODEL.TORCHVISION_FPN.TOP_BLOCK = "p6p7"
    model = build_model(cfg)
    holder = model.roi_heads if arch == "mask_rcnn" else model
    assert type(holder).__name__ == ("ShapePropROIHeads" if arch == "mask_rcnn" else "RetinaMask")
    from shapeprop.head import ShapePropHead

    assert isinstance(holder.shapeprop, ShapePropHead)
    # the mask head takes the 64 FPN channels plus the 8 prior channels, and predicts 7 classes
    assert _mask_head_in_channels(holder.mask_head) == 64 + 8
    assert holder.mask_head.predictor.out_channels == 7

    cfg.MODEL.SHAPEPROP.ENABLED = False
    plain = build_model(cfg)
    plain_holder = plain.roi_heads if arch == "mask_rcnn" else plain
    assert plain_holder.shapeprop is None and _mask_head_in_channels(plain_holder.mask_head) == 64


def test_build_with_a_model_zoo_resnet_config():
    """The ROI heads drop into a stock detectron2 Mask R-CNN config (ResNet-50 FPN, BGR input)."""
    path = d2.model_zoo_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    cfg = d2.get_cfg()
    cfg.merge_from_file(path)
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.ROI_HEADS.NAME", "ShapePropROIHeads"]
    )
    cfg.merge_from_list(["MODEL.ROI_HEADS.NUM_CLASSES", 10, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64])
    cfg.merge_from_list(["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32])
    model = build_model(cfg).train()
    assert _mask_head_in_channels(model.roi_heads.mask_head) == 256 + ShapePropConfig().prior_channels
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    gt = Instances((64, 64))
    from detectron2.structures import BitMasks, Boxes

    gt.gt_boxes = Boxes(torch.tensor([[8.0, 8.0, 40.0, 48.0]]))
    gt.gt_classes = torch.tensor([3])
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 10:46, 10:38] = True
    gt.gt_masks = BitMasks(mask)
    with EventStorage():
        losses = model([{"image": image, "instances": gt}])
    assert {"loss_mask", "loss_mil", "loss_shape", "loss_cls", "loss_rpn_cls"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shapeprop", [True, False], ids=["shapeprop", "plain"])
def test_same_parameter_counts_as_torchvision(arch, shapeprop):
    mc = _model_cfg(arch, shapeprop)
    tv = build_detector(mc.model_copy(update={"framework": "torchvision"}), 10, SIZE, SIZE)
    det = d2.build_detectron2_detector(mc, 10, SIZE, SIZE)
    ours, theirs = d2.param_counts(det), torchvision_param_counts(tv)
    assert ours["shapeprop"] == theirs["shapeprop"]
    assert (ours["shapeprop"] > 0) == shapeprop
    assert ours["total"] == sum(p.numel() for p in det.parameters())
    assert ours["mask_head"] == theirs["mask_head"]
    # and the very same backbone
    own = sum(p.numel() for p in det.model.backbone.parameters())
    assert own == sum(p.numel() for p in tv.backbone.parameters())


@pytest.mark.parametrize(
    "update, key",
    [({"mask_transfer": True}, "mask_transfer"), ({"pseudo_masks": "progressive"}, "pseudo_masks")],
)
def test_torchvision_only_options_are_refused(update, key):
    with pytest.raises(ValueError, match=f"model.{key}.*torchvision"):
        d2.build_detectron2_detector(_model_cfg("mask_rcnn").model_copy(update=update), 10, SIZE, SIZE)


# How each ModelConfig field reaches a detectron2 model: (a non-default value, the config key it must
# change), or the error it must raise. A field missing here fails the test: none is dropped silently.
FIELD_HANDLING = {
    "arch": ("retinamask", "MODEL.META_ARCHITECTURE"),
    "backbone": ("resnet18", "MODEL.TORCHVISION_FPN.NAME"),
    "weights": ("synthetic-pretrained", "MODEL.TORCHVISION_FPN.WEIGHTS"),
    "class_agnostic_masks": (True, "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK"),
    "mask_head_channels": (32, "MODEL.ROI_MASK_HEAD.CONV_DIM"),
    "shapeprop": (ShapePropConfig(preset="light"), "MODEL.SHAPEPROP.LATENT_CHANNELS"),
    "shapeprop_rois_per_image": (16, "MODEL.SHAPEPROP.ROIS_PER_IMAGE"),
    "sizes": (DetectorSizes(box_batch_size_per_image=16), "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE"),
    "mask_transfer": (True, ValueError),
    "pseudo_masks": ("progressive", ValueError),
    "compile": ("default", ValueError),
    "channels_last": (True, ValueError),
}
# `framework` is the switch itself; `pseudo_masks: grabcut` works in either framework, as it writes
# pseudo masks into the records before any model is built.


def test_every_model_field_reaches_detectron2_or_is_refused():
    from shapeprop.config import ModelConfig

    assert set(ModelConfig.model_fields) == set(FIELD_HANDLING) | {"framework"}
    base = ModelConfig(framework="detectron2", backbone="tiny")
    default = d2.config_from_model_config(base, 10, SIZE, SIZE)
    for field, (value, expect) in FIELD_HANDLING.items():
        model_cfg = base.model_copy(update={field: value})
        if expect is ValueError:
            with pytest.raises(ValueError, match=f"model.{field}"):
                d2.config_from_model_config(model_cfg, 10, SIZE, SIZE)
            continue
        cfg = d2.config_from_model_config(model_cfg, 10, SIZE, SIZE)
        node_default, node = default, cfg
        for part in expect.split("."):
            node_default, node = node_default[part], node[part]
        assert node != node_default, f"model.{field} does not reach {expect}"


SIZE_KEYS = {  # model.sizes field -> the detectron2 key it sets (the training value of a pair)
    "rpn_pre_nms_top_n": ((150, 300), "MODEL.RPN.PRE_NMS_TOPK_TRAIN"),
    "rpn_post_nms_top_n": ((50, 100), "MODEL.RPN.POST_NMS_TOPK_TRAIN"),
    "rpn_batch_size_per_image": (64, "MODEL.RPN.BATCH_SIZE_PER_IMAGE"),
    "box_batch_size_per_image": (32, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE"),
    "box_head_channels": (96, "MODEL.ROI_BOX_HEAD.FC_DIM"),
    "mask_head_channels": (24, "MODEL.ROI_MASK_HEAD.CONV_DIM"),
}


def test_every_detector_size_reaches_detectron2():
    from shapeprop.config import ModelConfig

    assert set(DetectorSizes.model_fields) == set(SIZE_KEYS)
    base = ModelConfig(framework="detectron2", backbone="tiny")
    for field, (value, key) in SIZE_KEYS.items():
        cfg = d2.config_from_model_config(
            base.model_copy(update={"sizes": DetectorSizes(**{field: value})}), 10, SIZE, SIZE
        )
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == (value[0] if isinstance(value, tuple) else value), f"model.sizes.{field} -> {key}"


@pytest.mark.parametrize("arch", ARCHS)
def test_training_on_synthetic_lowers_the_loss(arch, batch):
    images, targets = batch
    cfg = d2.config_from_model_config(_model_cfg(arch), 10, SIZE, SIZE).clone()
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32  # fewer sampled RoIs: a faster test
    torch.manual_seed(0)
    model = d2.Detectron2Detector(build_model(cfg), cfg).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    history = []
    for step in range(8):
        torch.manual_seed(step)
        losses = model(images, targets)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        if step == 0:
            assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_mil", "loss_shape"} <= set(losses)
            grads = [p.grad for p in model.model.parameters() if p.requires_grad]
            shapeprop = model.model.roi_heads.shapeprop if arch == "mask_rcnn" else model.model.shapeprop
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in shapeprop.parameters())
            assert all(g is not None for g in grads)
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()} | {"total": float(total.detach())})
    assert all(np.isfinite(h["total"]) for h in history)
    last = np.mean([h["total"] for h in history[-3:]])
    assert last < 0.85 * history[0]["total"], [round(h["total"], 3) for h in history]
    assert history[-1]["loss_mask"] < history[0]["loss_mask"]


@pytest.mark.parametrize("arch", ARCHS)
def test_mask_losses_ignore_instances_without_mask(arch, batch):
    """Only instances with has_mask feed loss_mask / loss_shape: scrambling the others' masks changes
    nothing, scrambling a has-mask instance's mask does."""
    images, targets = batch
    assert any(not t["has_mask"].all() for t in targets)
    model = d2.build_detectron2_detector(_model_cfg(arch), 10, SIZE, SIZE).train()

    def losses_with(scramble_has_mask: bool):
        scrambled = []
        for t in targets:
            masks = t["masks"].clone()
            which = t["has_mask"] if scramble_has_mask else ~t["has_mask"]
            masks[which] = 1 - masks[which]
            scrambled.append(t | {"masks": masks})
        torch.manual_seed(0)
        with torch.no_grad():
            return model(images, scrambled)

    torch.manual_seed(0)
    with torch.no_grad():
        reference = model(images, targets)
    others = losses_with(scramble_has_mask=False)
    own = losses_with(scramble_has_mask=True)
    for key in ("loss_mask", "loss_shape", "loss_mil"):
        assert float(others[key]) == pytest.approx(float(reference[key]), rel=1e-6, abs=1e-7)
    assert abs(float(own["loss_mask"]) - float(reference["loss_mask"])) > 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_training_step_with_an_image_without_objects(arch, batch):
    images, targets = batch
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.long),
        "masks": torch.zeros(0, SIZE, SIZE, dtype=torch.uint8),
        "has_mask": torch.zeros(0, dtype=torch.bool),
    }
    model = d2.build_detectron2_detector(_model_cfg(arch), 10, SIZE, SIZE).train()
    losses = model(images, [targets[0], empty])
    assert {"loss_mask", "loss_mil", "loss_shape"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_retinamask_training_rois_have_negatives_before_any_score_clears_the_threshold(batch):
    """Untrained, no score clears the 0.05 inference threshold: the mask branch's training RoIs are
    still the top detections (mostly negatives, ShapeProp's negative MIL bags), not the GT boxes alone."""
    images, targets = batch
    model = d2.build_detectron2_detector(_model_cfg("retinamask"), 10, SIZE, SIZE).train()
    meta = model.model
    seen = []
    inner = meta._mask_training_rois
    meta._mask_training_rois = lambda *args: seen.append(inner(*args)) or seen[-1]
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert meta.test_score_thresh == 0.05  # restored for inference
    (rois,) = seen
    for roi, target in zip(rois, targets, strict=True):
        num_gt = len(target["boxes"])
        assert num_gt < len(roi) <= meta.mask_train_rois + num_gt
        assert (roi.gt_classes == meta.num_classes).sum() > 0  # negatives (background class)
        assert (roi.gt_classes < meta.num_classes).sum() >= num_gt


@pytest.mark.parametrize("arch", ARCHS)
def test_inference_gives_instances_with_masks(arch, batch):
    images, _ = batch
    det = d2.build_detectron2_detector(_model_cfg(arch), 10, SIZE, SIZE, score_thresh=0.0).eval()
    inputs = [{"image": images[0] * 255, "height": 96, "width": 80}]  # detectron2's own interface
    with torch.no_grad():
        (output,) = det.model(inputs)
    inst = output["instances"]
    assert isinstance(inst, Instances) and inst.image_size == (96, 80)
    n = len(inst)
    assert 0 < n <= 100
    assert inst.pred_masks.shape == (n, 96, 80) and inst.pred_masks.dtype == torch.bool
    assert inst.pred_boxes.tensor.shape == (n, 4) and inst.scores.shape == (n,)
    assert int(inst.pred_classes.min()) >= 0 and int(inst.pred_classes.max()) < 10
    assert inst.saliency.shape == inst.shape_activation.shape == (n, 1, 14, 14)
    assert 0 <= float(inst.shape_activation.min()) and float(inst.shape_activation.max()) <= 1
    # masks lie inside their boxes (pasted into the box at the output resolution)
    boxes = inst.pred_boxes.tensor
    ys, xs = torch.meshgrid(torch.arange(96), torch.arange(80), indexing="ij")
    for mask, (x0, y0, x1, y1) in zip(inst.pred_masks, boxes, strict=True):
        if mask.any():
            assert xs[mask].min() >= x0.floor() - 1 and xs[mask].max() <= x1.ceil()
            assert ys[mask].min() >= y0.floor() - 1 and ys[mask].max() <= y1.ceil()

    # the harness's interface: the same detections as torchvision-style dicts, labels 1-based
    with torch.no_grad():
        (dets,) = det([images[0]], original_sizes=[(96, 80)])
    assert torch.equal(dets["boxes"], inst.pred_boxes.tensor)
    assert torch.equal(dets["labels"], inst.pred_classes + 1)
    assert torch.equal(dets["masks"][:, 0].bool(), inst.pred_masks)
    assert torch.equal(dets["shape_activation"], inst.shape_activation)


def test_mapper_keeps_has_mask_and_trains_natively(synthetic):
    """detectron2's own data path: records -> ShapePropDatasetMapper -> model, in an EventStorage."""
    records = synthetic[0]
    cfg = d2.config_from_model_config(_model_cfg("mask_rcnn"), 10, SIZE, SIZE).clone()
    cfg.defrost()
    cfg.INPUT.RANDOM_FLIP = "none"
    mapper = d2.ShapePropDatasetMapper(cfg, is_train=True)
    record = next(r for r in records if len({a["has_mask"] for a in r["annotations"]}) == 2)
    item = mapper(record)
    inst = item["instances"]
    anns = [a for a in record["annotations"] if not a.get("iscrowd")]
    assert inst.gt_has_mask.tolist() == [a["has_mask"] for a in anns]
    assert inst.gt_classes.tolist() == [a["category_id"] for a in anns]
    for i, ann in enumerate(anns):
        expected = annotation_to_mask(ann, SIZE, SIZE) if ann["has_mask"] else np.zeros((SIZE, SIZE))
        assert np.array_equal(inst.gt_masks.tensor[i].numpy(), expected.astype(bool))
    assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.uint8

    model = build_model(cfg).train()
    with EventStorage():
        losses = model([mapper(r) for r in records[:2]])
    assert {"loss_mask", "loss_mil", "loss_shape"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())


def test_harness_engine_and_evaluation(synthetic, tmp_path):
    """The Lightning engine trains the detectron2 model and the harness evaluation scores it."""
    from shapeprop.engine.train import load_model_weights, train_detector
    from shapeprop.eval.coco import evaluate_coco
    from shapeprop.eval.inference import predict

    records, metadata, root = synthetic
    data_cfg = DataConfig(root=str(root), min_size=SIZE, max_size=SIZE, num_workers=0)
    schedule = ScheduleConfig(
        max_steps=2, batch_size=2, lr=0.01, warmup_steps=1, milestones=[], checkpoint_every=2
    )
    mc = _model_cfg("mask_rcnn")
    torch.manual_seed(0)
    model = d2.build_detectron2_detector(mc, len(metadata.classes), SIZE, SIZE, score_thresh=0.0)
    outcome = train_detector(model, records, data_cfg, schedule, seed=0, workdir=tmp_path, progress=False)
    assert outcome.step == 2 and outcome.last_checkpoint.is_file()

    preds = predict(model, records[:2], SIZE, SIZE, keep_maps=True, warmup=0)
    assert preds.results and all("segmentation" in r for r in preds.results)
    assert set(preds.maps) == {r["image_id"] for r in records[:2]}
    metrics = evaluate_coco(records[:2], preds.results, metadata.classes)
    assert {"segm_AP", "bbox_AP"} <= set(metrics)

    # the checkpoint restores into a fresh detectron2 model and gives the same detections
    fresh = d2.build_detectron2_detector(mc, len(metadata.classes), SIZE, SIZE, score_thresh=0.0)
    load_model_weights(fresh, outcome.last_checkpoint)
    again = predict(fresh, records[:2], SIZE, SIZE, warmup=0)
    assert again.results == preds.results


def test_run_experiment_selects_detectron2(tmp_path):
    """`model.framework: detectron2` through `run_experiment`: same engine, records and evaluation."""
    from shapeprop.config import EvalConfig, ExperimentConfig
    from shapeprop.models.build import build_detector

    mc = _model_cfg("mask_rcnn")
    assert isinstance(build_detector(mc, 10, SIZE, SIZE), d2.Detectron2Detector)
    from shapeprop.experiment import run_experiment

    cfg = ExperimentConfig(
        data=DataConfig(
            root=str(tmp_path / "data"),
            options={"num_images": 4, "image_size": SIZE},
            min_size=SIZE,
            max_size=SIZE,
            num_workers=0,
        ),
        model=mc,
        schedule=ScheduleConfig(max_steps=2, batch_size=2, warmup_steps=1, milestones=[], checkpoint_every=2),
        eval=EvalConfig(max_images=2, timing=False),
    )
    result = run_experiment(cfg, tmp_path / "run", progress=False)
    assert "segm_AP" in result.metrics
    det = d2.build_detectron2_detector(mc, 10, SIZE, SIZE)
    assert result.param_counts == d2.param_counts(det)


def test_core_package_does_not_import_detectron2():
    """Only selecting the detectron2 framework imports detectron2 (here, where it is installed)."""
    code = (
        "import sys, shapeprop.models.build; "
        "print(any(m == 'detectron2' or m.startswith('detectron2.') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd()
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("rois_per_image", [None, 6])
def test_both_frameworks_give_the_same_mask_losses_and_gradients(rois_per_image):
    """The one mask-branch core behind both frameworks: same weights, features, RoIs and targets give
    the same losses and gradients (float64), whatever each framework's pooler and mask head."""
    from shapeprop.models.d2.mask import mask_losses
    from shapeprop.models.mask_branch import find_mask_branch

    sp = ShapePropConfig(preset="light", hidden_channels=8, latent_channels=4, prior_channels=4)
    model_cfg = ModelConfig(backbone="tiny", shapeprop=sp, shapeprop_rois_per_image=rois_per_image)
    torch.manual_seed(0)
    tv = find_mask_branch(build_detector(model_cfg, 5, SIZE, SIZE)).double()
    heads = d2.build_detectron2_detector(
        model_cfg.model_copy(update={"framework": "detectron2"}), 5, SIZE, SIZE
    )
    heads = heads.model.roi_heads.double()
    for mine, theirs in zip(
        heads.mask_head.parameters(), [*tv.head.parameters(), *tv.predictor.parameters()], strict=True
    ):
        mine.data.copy_(theirs.data)
    heads.shapeprop.load_state_dict(tv.shapeprop.state_dict())

    gen = torch.Generator().manual_seed(1)
    sizes = [(SIZE // 4) >> i for i in range(4)]
    features = [torch.randn(2, 64, s, s, generator=gen, dtype=torch.float64) for s in sizes]
    gt_boxes = [
        torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 20.0, 60.0, 44.0]]),
        torch.tensor([[10.0, 10.0, 30.0, 36.0]]),
    ]
    gt_labels = [torch.tensor([2, 5]), torch.tensor([1])]
    has_mask = [torch.tensor([True, False]), torch.tensor([True])]
    masks = [(torch.rand(len(b), SIZE, SIZE, generator=gen) > 0.4).to(torch.uint8) for b in gt_boxes]
    rois, labels, matched = [], [], []
    for boxes, classes in zip(gt_boxes, gt_labels, strict=True):
        jitter = boxes.repeat(4, 1) + torch.randn(4 * len(boxes), 4, generator=gen) * 2
        noise = torch.rand(8, 2, generator=gen) * 40
        r = torch.cat(
            [jitter, torch.cat([noise, noise + 8 + torch.rand(8, 2, generator=gen) * 16], 1)]
        ).double()
        rois.append(r)
        matched.append(torch.arange(len(r)) % len(boxes))
        labels.append(torch.cat([classes.repeat(4), torch.zeros(8, dtype=torch.long)]))

    def run_torchvision():
        feats = {str(i): f.clone().requires_grad_() for i, f in enumerate(features)}
        targets = [
            {"boxes": b.double(), "labels": lab, "masks": m, "has_mask": h}
            for b, lab, m, h in zip(gt_boxes, gt_labels, masks, has_mask, strict=True)
        ]
        torch.manual_seed(7)
        losses = tv.losses(feats, rois, [(SIZE, SIZE)] * 2, labels, matched, targets)
        return (
            losses,
            list(feats.values()),
            [*tv.head.parameters(), *tv.predictor.parameters(), *tv.shapeprop.parameters()],
        )

    def run_detectron2():
        from detectron2.structures import BitMasks, Boxes

        feats = [f.clone().requires_grad_() for f in features]
        targets = [
            Instances(
                (SIZE, SIZE),
                gt_boxes=Boxes(b.double()),
                gt_classes=lab - 1,
                gt_masks=BitMasks(m.bool()),
                gt_has_mask=h,
            )
            for b, lab, m, h in zip(gt_boxes, gt_labels, masks, has_mask, strict=True)
        ]
        proposals = [
            Instances(
                (SIZE, SIZE), proposal_boxes=Boxes(r), gt_classes=torch.where(lab > 0, lab - 1, 5), gt_index=m
            )
            for r, lab, m in zip(rois, labels, matched, strict=True)
        ]
        torch.manual_seed(7)
        losses = mask_losses(
            feats, heads.mask_pooler, heads.mask_head, heads.shapeprop, proposals, targets, 5, rois_per_image
        )
        return losses, feats, [*heads.mask_head.parameters(), *heads.shapeprop.parameters()]

    for (losses_a, feats_a, params_a), (losses_b, feats_b, params_b) in [
        (run_torchvision(), run_detectron2())
    ]:
        assert set(losses_a) == set(losses_b) == {"loss_mask", "loss_mil", "loss_shape"}
        for name in losses_a:
            assert losses_a[name].dtype == losses_b[name].dtype == torch.float64, name
            torch.testing.assert_close(losses_a[name], losses_b[name], rtol=1e-12, atol=1e-12)
        assert losses_a["loss_shape"] > 0 and losses_a["loss_mask"] > 0
        grads_a = torch.autograd.grad(sum(losses_a.values()), feats_a + params_a)
        grads_b = torch.autograd.grad(sum(losses_b.values()), feats_b + params_b)
        for ga, gb in zip(grads_a, grads_b, strict=True):
            torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)
        assert any(g.abs().sum() > 0 for g in grads_a[:4])  # the gradient reaches the features


def test_demo_suite_runs_end_to_end_under_detectron2(tmp_path):
    """`run suites/demo.yaml --profile mini --set model.framework=detectron2` (shortened by more
    --set values), then `report --set` finds those runs and only those."""
    from click.testing import CliRunner

    from harness.cli import main

    demo = ROOT / "suites" / "demo.yaml"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    short = {
        "model.weights": "null",
        "data.root": str(tmp_path / "data"),
        "data.options": "{num_images: 8, image_size: 64}",
        "data.min_size": "64",
        "data.max_size": "64",
        "data.num_workers": "0",
        "schedule.max_steps": "2",
        "schedule.milestones": "[]",
        "schedule.warmup_steps": "0",
        "schedule.checkpoint_every": "2",
        "eval.max_images": "2",
    }
    sets = [arg for key, value in short.items() for arg in ("--set", f"{key}={value}")]
    common = ["--profile", "mini", "--tracking-uri", uri]
    d2_set = ["--set", "model.framework=detectron2"]
    result = CliRunner().invoke(
        main, ["run", str(demo), *common, "--runs-dir", str(tmp_path / "runs"), *d2_set, *sets]
    )
    assert result.exit_code == 0, result.output
    assert "done 2, skipped 0, failed 0" in result.output
    status = CliRunner().invoke(main, ["status", str(demo), *common, *d2_set, *sets])
    assert status.exit_code == 0 and "total" in status.output
    totals = [
        [t for t in line.split() if t.isdigit()] for line in status.output.splitlines() if "total" in line
    ]
    assert totals == [["2", "0", "0", "0"]]  # finished, running, failed, missing

    def report(*extra: str):
        import pandas as pd

        out = tmp_path / f"report{len(extra)}"
        args = ["report", "--table", "4", "--suite", "demo", "--no-log", "--out", str(out), *common, *extra]
        done = CliRunner().invoke(main, args)
        assert done.exit_code == 0, done.output
        table = pd.read_csv(out / "table4-mini.csv")
        return table[table["column"] == "AP"].set_index("row")["n"]

    counts = report(*d2_set)  # runs per row with the detectron2 framework
    assert counts["baseline"] == 1 and counts["baseline + ShapeProp"] == 1
    torchvision_only = report("--set", "model.framework=torchvision")
    assert torchvision_only.fillna(0).sum() == 0  # no torchvision run in this store


CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", [p for p in CONFIGS if not p.name.startswith("Base-")], ids=lambda p: p.stem)
def test_configs_build_the_official_head(path):
    cfg = d2.get_cfg()
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    model = build_model(cfg)
    holder = model.roi_heads if hasattr(model, "roi_heads") else model
    assert holder.shapeprop.cfg == ShapePropConfig()  # the official preset
    assert (cfg.SOLVER.WARMUP_FACTOR, cfg.SOLVER.AMP.ENABLED) == (0.03, True)


def test_train_net_trains_with_detectron2s_trainer_and_a_mask_subset(synthetic, tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.engine import default_argument_parser

    from shapeprop.models.d2 import train_net

    records, metadata, _ = synthetic
    name = "shapeprop_test_synthetic_train"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(
            name, lambda: [dict(r, annotations=[dict(a) for a in r["annotations"]]) for r in records]
        )
        MetadataCatalog.get(name).set(thing_classes=list(metadata.classes))
    kept = metadata.classes[:3]
    opts = {
        "MODEL.DEVICE": "cpu",
        "MODEL.WEIGHTS": "",
        "MODEL.BACKBONE.NAME": "build_torchvision_fpn_backbone",
        "MODEL.TORCHVISION_FPN.NAME": "tiny",
        "MODEL.ANCHOR_GENERATOR.SIZES": [[8], [16], [32], [64], [128]],
        "MODEL.ROI_HEADS.NUM_CLASSES": len(metadata.classes),
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32,
        "MODEL.RPN.POST_NMS_TOPK_TRAIN": 64,
        "MODEL.SHAPEPROP.PRESET": "light",
        "DATASETS.TRAIN": (name,),
        "DATASETS.TEST": (),
        "DATASETS.SHAPEPROP_MASK_CLASSES": ",".join(kept),
        "DATALOADER.NUM_WORKERS": 0,
        "INPUT.MIN_SIZE_TRAIN": (SIZE,),
        "INPUT.MAX_SIZE_TRAIN": SIZE,
        "SOLVER.IMS_PER_BATCH": 2,
        "SOLVER.MAX_ITER": 2,
        "SOLVER.AMP.ENABLED": False,
        "OUTPUT_DIR": str(tmp_path / "out"),
    }
    argv = ["--config-file", str(next(p for p in CONFIGS if p.stem.endswith("nonvoc_to_voc")))]
    argv += [str(x) for key, value in opts.items() for x in (key, value)]
    train_net.main(default_argument_parser().parse_args(argv))
    assert (tmp_path / "out" / "model_final.pth").is_file()
    subset = DatasetCatalog.get(f"{name}_masks_{'+'.join(kept)}")
    ids = {metadata.classes.index(c) for c in kept}
    flags = [(a["category_id"] in ids, a["has_mask"]) for r in subset for a in r["annotations"]]
    assert flags and all(kept_class == has for kept_class, has in flags) and any(has for _, has in flags)
    with pytest.raises(ValueError, match="SHAPEPROP_MASK_CLASSES"):
        train_net.mask_classes_of(name, "no-such-class")
