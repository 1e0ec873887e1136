"""The fully resolved configuration of one experiment (data -> split -> model -> train -> evaluate).

This is the contract between the library and the harness: a suite row expands into one
`ExperimentConfig`; `shapeprop.experiment.run_experiment` consumes it. Every model forbids
unknown keys, so a misspelt key fails validation instead of being silently ignored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# torch-free registries: the harness validates configs without importing torch
from shapeprop.models.detectors import DETECTORS
from shapeprop.models.recipes import BACKBONES, BackboneRecipe


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The head as the authors' code builds it (ucbdrive/ShapeProp, docs/fidelity.md), and a narrower,
# shallower head for CPUs and speed. A preset fills every field a config does not set.
SHAPEPROP_PRESETS: dict[str, dict[str, object]] = {
    "official": {
        "saliency_layers": 4,
        "hidden_channels": 256,
        "latent_channels": 24,
        "encoder_layers": 3,
        "weight_layers": 4,
        "mil_loss": "softmax",
        "saliency_input": "logits",
        "relu_after_last_conv": False,
        "decoder_layers": 3,
        "decoder_kernel": 3,
        "prior_norm": "relu_max",
        "prior_layers": 4,
        "prior_channels": 256,
        "output_init": "authors",
    },
    "light": {
        "saliency_layers": 2,
        "hidden_channels": None,
        "latent_channels": 16,
        "encoder_layers": 2,
        "weight_layers": 2,
        "mil_loss": "sigmoid",
        "saliency_input": "sigmoid",
        "relu_after_last_conv": True,
        "decoder_layers": 1,
        "decoder_kernel": 1,
        "prior_norm": "minmax",
        "prior_layers": 2,
        "prior_channels": 16,
        "output_init": "calibrated",
    },
}


class ShapePropConfig(_Strict):
    """Hyper-parameters of the ShapeProp head (Sec. 3.1-3.2).

    `preset` fills every field the config does not set: "official" is the head of the authors'
    code (the default), "light" a narrower, shallower one (the CPU miniatures). Fields set
    explicitly win over the preset; `docs/fidelity.md` compares both with the paper and the code.
    Input channels and the number of classes come from the detector, not from here.
    """

    preset: Literal["official", "light"] = Field("official", description="fills the fields not set")
    saliency_layers: int = Field(4, ge=0, description="conv-relu layers of the saliency learner F")
    hidden_channels: int | None = Field(
        256, ge=1, description="width of F and the weight regressor; None = RoI feature channels"
    )
    latent_channels: int = Field(24, ge=1, description="C, channels of the latent saliency (paper: 16)")
    encoder_layers: int = Field(3, ge=1, description="3x3 conv layers encoding saliency 1 -> C")
    weight_layers: int = Field(4, ge=1, description="conv-relu layers of the propagation-weight regressor")
    channel_agnostic: bool = Field(
        False, description="one propagation kernel shared by all latent channels (Table 4)"
    )
    steps: int | None = Field(None, ge=1, description="propagation steps; None = max(H, W)")
    norm: Literal["random_walk", "symmetric"] = "random_walk"
    mil_loss: Literal["softmax", "sigmoid"] = Field(
        "softmax",
        description="Eq. 3 on the Avg2D-pooled maps: softmax cross-entropy over K classes + background "
        "(K + 1 maps), or a binary cross-entropy per class (K maps)",
    )
    saliency_input: Literal["logits", "sigmoid"] = Field(
        "logits", description="what the encoder receives of the RoI's class map: its logits or their sigmoid"
    )
    relu_after_last_conv: bool = Field(
        False,
        description="a ReLU after the last conv of the encoder and the prior encoder (else between layers only)",
    )
    decoder_layers: int = Field(3, ge=1, description="conv layers decoding the latent C -> 1 (ReLU between)")
    decoder_kernel: Literal[1, 3] = Field(3, description="kernel size of the decoder's convs")
    prior_norm: Literal["relu_max", "minmax"] = Field(
        "relu_max",
        description="the shape logits as a prior: ReLU then / (max + 1e-5) per RoI, or the sigmoid "
        "min-max normalised per RoI",
    )
    prior_layers: int = Field(
        4, ge=1, description="3x3 conv layers encoding the shape prior 1 -> prior_channels"
    )
    prior_channels: int = Field(
        256, ge=1, description="channels of the encoded shape prior fused into the mask head"
    )
    output_init: Literal["authors", "calibrated"] = Field(
        "authors",
        description="init of the 1x1 saliency and weight layers: kaiming-uniform (a=1), zero bias, as "
        "maskrcnn-benchmark; or calibrated: saliency logits start at sigmoid 0.01, weights uniform",
    )
    saliency_autocast: bool = Field(
        False,
        description="the saliency learner F (its convs on every sampled RoI: most of the head's "
        "arithmetic) under the run's autocast; the propagation path stays in float32 either way",
    )
    mil_iou_threshold: float = Field(0.5, gt=0, lt=1, description="t of Eq. 2")
    mil_loss_weight: float = Field(1.0, ge=0)
    reconstruction_loss_weight: float = Field(1.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset", "official") in SHAPEPROP_PRESETS:
            return SHAPEPROP_PRESETS[data.get("preset", "official")] | data
        return data


class MaskSupervision(_Strict):
    """Which annotations keep their mask (semi-supervision); boxes are never dropped."""

    kind: Literal["all", "categories", "images", "image_fraction"] = "all"
    classes: list[str] | str | None = Field(
        None,
        description="kind=categories: class names, or a class group of the dataset such as 'voc' / 'nonvoc'",
    )
    image_ids: list[int | str] | None = Field(None, description="kind=images: images that keep their masks")
    fraction: float | None = Field(
        None, gt=0, le=1, description="kind=image_fraction: seeded fraction of images with masks"
    )


class SplitFiles(_Strict):
    """One split of a COCO-format dataset of one's own."""

    annotations: str = Field(min_length=1, description="the COCO instances JSON")
    images: str = Field(min_length=1, description="the folder its images' file_names are relative to")


class DataConfig(_Strict):
    dataset: str = Field(
        "synthetic",
        description="a registered dataset (synthetic, coco_2017, voc_2012, bdd100k_fused, a plugin's), "
        "or the name of the dataset `files` gives",
    )
    files: dict[str, SplitFiles] | None = Field(
        None,
        description="a COCO-format dataset of your own: per split name, its annotation file and image "
        "folder (then `root` and `options` do not apply)",
    )
    class_groups: dict[str, list[str]] | None = Field(
        None,
        description="with `files`: named groups of its classes (e.g. seen / unseen), usable in "
        "masks.classes and eval.categories like COCO's voc / nonvoc",
    )
    root: str | None = Field(
        None, description="dataset root directory; None = the dataset's default (synthetic: a cache dir)"
    )
    train_split: str = "train"
    test_split: str = "val"
    options: dict[str, int | float | str | bool] = Field(
        default_factory=dict, description="dataset-specific options (synthetic: num_images, image_size, ...)"
    )
    masks: MaskSupervision = Field(default_factory=MaskSupervision)
    data_fraction: float = Field(
        1.0, gt=0, le=1, description="seeded fraction of training images kept (Fig. 6)"
    )
    split_seed: int = 0
    min_size: int = Field(800, ge=16)
    max_size: int = Field(1333, ge=16)
    hflip: bool = True
    num_workers: int = Field(2, ge=0)

    @model_validator(mode="after")
    def _dataset_known(self) -> DataConfig:
        if self.files is None:
            if self.class_groups is not None:
                raise ValueError("class_groups needs files (a registered dataset brings its own groups)")
            from shapeprop.data.catalog import DATASETS

            DATASETS.check(self.dataset)
            return self
        missing = [s for s in (self.train_split, self.test_split) if s not in self.files]
        if missing:
            raise ValueError(
                f"files has no split {', '.join(map(repr, missing))} (its splits: {', '.join(self.files)}); "
                "add it, or set train_split / test_split to one of them"
            )
        return self


class DetectorSizes(_Strict):
    """Sizes of a detector that trade training cost for what each step sees; a field left None
    keeps the backbone recipe's value (`shapeprop.models.recipes.BackboneRecipe`, same names)."""

    rpn_pre_nms_top_n: tuple[int, int] | None = Field(None, description="(training, testing) per level")
    rpn_post_nms_top_n: tuple[int, int] | None = Field(None, description="(training, testing) proposals")
    rpn_batch_size_per_image: int | None = Field(None, ge=1, description="sampled anchors per image")
    box_batch_size_per_image: int | None = Field(None, ge=1, description="sampled RoIs per image")
    box_head_channels: int | None = Field(None, ge=1, description="box head MLP width")
    mask_head_channels: int | None = Field(
        None, ge=1, description="the default mask head width (model.mask_head_channels still wins)"
    )


class ModelConfig(_Strict):
    framework: Literal["torchvision", "detectron2"] = "torchvision"
    arch: str = Field("mask_rcnn", description="a registered detector (shapeprop.models.detectors.DETECTORS)")
    backbone: str = Field(
        "resnet50", description="a registered backbone (shapeprop.models.recipes.BACKBONES)"
    )
    weights: str | None = Field(
        None,
        description="local checkpoint path, a torchvision weight name, or 'synthetic-pretrained' "
        "(tiny backbone: shapeprop.models.pretrain); None = random init",
    )
    class_agnostic_masks: bool = False
    mask_head_channels: int | None = Field(
        None,
        ge=1,
        description="mask head width; None = the architecture default (Table 4 'more head params' widens it)",
    )
    shapeprop: ShapePropConfig | None = Field(None, description="None = no ShapeProp head")
    shapeprop_rois_per_image: int | None = Field(
        None,
        ge=1,
        description="training RoIs per image through the ShapeProp head: every positive, then sampled "
        "negatives up to this many; None = all sampled RoIs (the paper)",
    )
    sizes: DetectorSizes | None = Field(
        None,
        description="proposal and sampling sizes that replace the backbone recipe's "
        "(shapeprop.models.recipes); None = the recipe's",
    )
    pseudo_masks: Literal["none", "box", "grabcut", "progressive"] = Field(
        "none", description="baselines: masks for box-only instances (box: the filled box)"
    )
    mask_transfer: bool = Field(False, description="Mask^X R-CNN weight transfer from box head to mask head")
    compile: Literal["none", "default", "reduce-overhead", "max-autotune-no-cudagraphs"] = Field(
        "none",
        description="torch.compile mode of the detector's fixed-shape parts (backbone + FPN, box head, "
        "ShapeProp head, mask head; shapeprop.models.compile), 'reduce-overhead' adding CUDA graphs on a "
        "GPU; 'none' runs eagerly. The same losses to float rounding (docs/roofline.md)",
    )
    channels_last: bool = Field(
        False,
        description="the ShapeProp head computes in channels-last memory format (oneDNN's faster CPU "
        "convolutions); the same losses to float rounding",
    )

    @field_validator("arch")
    @classmethod
    def _registered_detector(cls, name: str) -> str:
        return DETECTORS.check(name)

    @field_validator("backbone")
    @classmethod
    def _registered_backbone(cls, name: str) -> str:
        return BACKBONES.check(name)

    def backbone_recipe(self) -> BackboneRecipe:
        """The sizes of the detector: the backbone's recipe with those `sizes` sets in its place."""
        base = BACKBONES.get(self.backbone).recipe
        return base if self.sizes is None else replace(base, **self.sizes.model_dump(exclude_none=True))

    def mask_head_width(self) -> int:
        """`mask_head_channels`, else the width of `backbone_recipe()`."""
        if self.mask_head_channels is not None:
            return self.mask_head_channels
        return self.backbone_recipe().mask_head_channels


class ScheduleConfig(_Strict):
    max_steps: int = Field(90_000, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(0.02, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(1000, ge=0)
    warmup_factor: float = Field(0.001, gt=0, le=1)
    milestones: list[int] = Field(default_factory=lambda: [60_000, 80_000])
    gamma: float = Field(0.1, gt=0)
    clip_grad_norm: float | None = Field(
        None,
        gt=0,
        description="scale the gradients down to this global L2 norm before a step when they exceed it; "
        "None (the paper's recipe) never clips",
    )
    checkpoint_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(
        2,
        ge=-1,
        description="step checkpoints kept beside last.ckpt, the newest; 0 keeps last.ckpt alone, -1 "
        "every one (a COCO run of 90k steps would keep 90 of about 0.35 GB)",
    )
    precision: Literal["32", "16-mixed", "bf16-mixed"] = Field(
        "32", description="AMP; on the CPU only bf16-mixed applies (16-mixed trains in float32 there)"
    )
    devices: int = Field(1, ge=1)
    num_nodes: int = Field(1, ge=1)


class EvalConfig(_Strict):
    categories: list[str] | str | None = Field(
        None, description="restrict AP to these classes or this class group ('voc', 'nonvoc')"
    )
    best_overlap: bool = False
    timing: bool = True
    max_images: int | None = Field(None, ge=1)
    score_threshold: float = Field(0.05, ge=0, le=1)
    detections_per_image: int = Field(100, ge=1)


class ExperimentConfig(_Strict):
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)


def checkpoint_identity(cfg: ExperimentConfig) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed: all but run length, checkpointing, loader
    workers and evaluation."""
    schedule_exclude = {"max_steps", "checkpoint_every", "keep_checkpoints"}
    if cfg.schedule.clip_grad_norm is None:  # as in the checkpoints written before the field existed
        schedule_exclude.add("clip_grad_norm")
    return {
        "seed": cfg.seed,
        "model": cfg.model.model_dump(mode="json"),
        "data": cfg.data.model_dump(mode="json", exclude={"num_workers"}),
        "schedule": cfg.schedule.model_dump(mode="json", exclude=schedule_exclude),
    }


def training_key(cfg: ExperimentConfig) -> str:
    """Equal for two configs that train the same model (their checkpoint identity and run length
    agree; they may evaluate differently): one's finished training serves the other."""
    spec = {**checkpoint_identity(cfg), "max_steps": cfg.schedule.max_steps}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
