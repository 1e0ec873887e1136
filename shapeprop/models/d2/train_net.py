"""Train and evaluate ShapeProp with detectron2's own trainer, as detectron2's `projects/` do.

    python -m shapeprop.models.d2.train_net --config-file configs/mask_rcnn_R_50_FPN_1x_shapeprop.yaml --num-gpus 8
    python -m shapeprop.models.d2.train_net --config-file configs/... --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python -m shapeprop.models.d2.train_net --config-file configs/... --num-gpus 8 SOLVER.IMS_PER_BATCH 8

detectron2's `default_argument_parser` options (`--num-gpus`, `--num-machines`, `--resume`,
`--eval-only`, trailing `KEY VALUE` overrides) apply. The configs under `configs/` are complete;
the datasets are detectron2's registered ones (`DETECTRON2_DATASETS`). The plugin's training loader
keeps each annotation's `has_mask` (`ShapePropDatasetMapper`); `DATASETS.SHAPEPROP_MASK_CLASSES`
("voc", "nonvoc" or comma-separated class names; "" = all) keeps masks only for the annotations of
those classes in the training sets: the partially supervised setting of Table 1.
"""

from __future__ import annotations

import os
from typing import Any

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import COCOEvaluator

from shapeprop.data.coco import coco_class_groups
from shapeprop.models.d2.config import get_cfg
from shapeprop.models.d2.mapper import ShapePropDatasetMapper


class Trainer(DefaultTrainer):
    """detectron2's DefaultTrainer with the plugin's dataset mapper and COCO evaluation."""

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        return build_detection_train_loader(cfg, mapper=ShapePropDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None):
        # pycocotools' evaluation (detectron2's faster one needs its compiled ops)
        output = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(dataset_name, output_dir=output, use_fast_impl=False)


def mask_classes_of(dataset: str, spec: str) -> list[str]:
    """The classes whose annotations keep their masks: a class group ("voc" / "nonvoc", COCO's) or
    comma-separated names, checked against the dataset's `thing_classes`."""
    classes = list(MetadataCatalog.get(dataset).thing_classes)
    groups = coco_class_groups(classes)
    chosen = groups[spec] if spec in groups else [c.strip() for c in spec.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in classes]
    if unknown or not chosen:
        raise ValueError(
            f"DATASETS.SHAPEPROP_MASK_CLASSES {spec!r}: {unknown or 'no class'} not among the classes of "
            f"{dataset!r}; use 'voc', 'nonvoc' or names from its thing_classes"
        )
    return chosen


def register_mask_subset(dataset: str, spec: str) -> str:
    """Register (once) `dataset` with masks kept only for the classes `spec` names; returns its name."""
    name = f"{dataset}_masks_{spec.replace(',', '+').replace(' ', '')}"
    if name in DatasetCatalog.list():
        return name
    classes = list(MetadataCatalog.get(dataset).thing_classes)
    keep = {classes.index(c) for c in mask_classes_of(dataset, spec)}

    def load() -> list[dict[str, Any]]:
        records = DatasetCatalog.get(dataset)
        for record in records:
            for ann in record.get("annotations", []):
                ann["has_mask"] = ann["category_id"] in keep and ann.get("segmentation") is not None
        return records

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        **{k: v for k, v in MetadataCatalog.get(dataset).as_dict().items() if k != "name"}
    )
    return name


def setup(args) -> CfgNode:
    """The plugin's config from `args.config_file` and `args.opts`, with the mask subsets registered."""
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    spec = cfg.DATASETS.SHAPEPROP_MASK_CLASSES
    if spec:
        cfg.DATASETS.TRAIN = tuple(register_mask_subset(name, spec) for name in cfg.DATASETS.TRAIN)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    arguments = default_argument_parser().parse_args()
    launch(
        main,
        arguments.num_gpus,
        num_machines=arguments.num_machines,
        machine_rank=arguments.machine_rank,
        dist_url=arguments.dist_url,
        args=(arguments,),
    )
