"""The fully resolved configuration of one experiment (data -> split -> model -> train -> evaluate).

This is the contract between the library and the harness: a suite row expands into one
`ExperimentConfig`; `shapeprop.experiment.run_experiment` consumes it. Every model forbids
unknown keys, so a misspelt key fails validation instead of being silently ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShapePropConfig(_Strict):
    """Hyper-parameters of the ShapeProp head (Sec. 3.1-3.2); defaults follow the paper.

    Input channels and the number of classes come from the detector, not from here.
    """

    saliency_layers: int = Field(2, ge=0, description="conv-relu layers of the saliency learner F")
    hidden_channels: int | None = Field(
        None, ge=1, description="width of F and the weight regressor; None = RoI feature channels"
    )
    latent_channels: int = Field(16, ge=1, description="C, channels of the latent saliency (paper: 16)")
    encoder_layers: int = Field(2, ge=1, description="conv-relu layers encoding saliency 1 -> C")
    weight_layers: int = Field(2, ge=1, description="conv-relu layers of the propagation-weight regressor")
    channel_agnostic: bool = Field(
        False, description="one propagation kernel shared by all latent channels (Table 4)"
    )
    steps: int | None = Field(None, ge=1, description="propagation steps; None = max(H, W)")
    norm: Literal["random_walk", "symmetric"] = "random_walk"
    prior_channels: int = Field(
        16, ge=1, description="channels of the encoded shape prior fused into the mask head"
    )
    mil_iou_threshold: float = Field(0.5, gt=0, lt=1, description="t of Eq. 2")
    mil_loss_weight: float = Field(1.0, ge=0)
    reconstruction_loss_weight: float = Field(1.0, ge=0)


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


class DataConfig(_Strict):
    dataset: str = Field(
        "synthetic", description="catalog name, e.g. synthetic, coco_2017, voc_2012, bdd100k_fused"
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


class ModelConfig(_Strict):
    framework: Literal["torchvision", "detectron2"] = "torchvision"
    arch: Literal["mask_rcnn", "retinamask"] = "mask_rcnn"
    backbone: Literal["tiny", "resnet18", "resnet50", "resnet101"] = "resnet50"
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
    pseudo_masks: Literal["none", "grabcut", "progressive"] = Field(
        "none", description="baselines: masks for box-only instances"
    )
    mask_transfer: bool = Field(False, description="Mask^X R-CNN weight transfer from box head to mask head")


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
    checkpoint_every: int = Field(1000, ge=1)
    precision: Literal["32", "16-mixed", "bf16-mixed"] = Field("32", description="AMP is used on GPU only")
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
