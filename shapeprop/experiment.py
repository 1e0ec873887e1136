"""One experiment: data -> split -> model -> train -> evaluate, from a fully resolved config.

This is the library side of the harness contract: the harness builds an `ExperimentConfig`, calls
`run_experiment`, and logs what the callbacks and the returned `ExperimentResult` report. Nothing
here knows about MLflow.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pandas as pd
import torch

from shapeprop.config import ExperimentConfig, checkpoint_identity
from shapeprop.contract import ExperimentCallbacks, ExperimentResult
from shapeprop.data import source
from shapeprop.data.records import DatasetMetadata
from shapeprop.data.splits import prepare_training_records
from shapeprop.engine.module import NonFiniteLossError
from shapeprop.engine.train import LAST, train_detector
from shapeprop.eval.best_overlap import best_overlap_table
from shapeprop.eval.coco import evaluate_coco, resolve_categories
from shapeprop.eval.gt_boxes import gt_box_mask_table, mean_iou
from shapeprop.eval.image_ap import GT_TABLE, MATCHES_TABLE
from shapeprop.eval.inference import predict
from shapeprop.files import write_atomic
from shapeprop.models.baselines.progressive import PSEUDO_FILE
from shapeprop.models.build import build_detector
from shapeprop.models.params import param_counts

__all__ = ["ExperimentCallbacks", "ExperimentResult", "NonFiniteLossError", "run_experiment"]


def evaluation_fingerprint(metadata: DatasetMetadata, cfg: ExperimentConfig) -> str:
    """sha256 of what the evaluation reads, as `split_fingerprint` is of what training reads:
    (dataset, annotation fingerprint, test split, the first `eval.max_images` images)."""
    spec = {
        "dataset": metadata.name,
        "annotations": metadata.fingerprint,
        "split": cfg.data.test_split,
        "max_images": cfg.eval.max_images,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _write_json_atomic(path: Path, obj: Any) -> Path:
    return write_atomic(path, json.dumps(obj, indent=1, default=str))


def _write_csv_atomic(path: Path, table: pd.DataFrame) -> Path:
    return write_atomic(path, table.to_csv(index=False))


STAGE1_DIR = "progressive_stage1"  # the progressive baseline's stage 1, in the work dir
#: What a finished run's training leaves in its work dir for a run of the same `shapeprop.config.training_key` to
#: start from: the last checkpoint (at max_steps: only loaded) and the progressive baseline's pseudo
#: masks (stage 1 then skipped). Paths relative to the work dir; the second only where it exists.
TRAINED_STATE = (f"checkpoints/{LAST}", f"{STAGE1_DIR}/{PSEUDO_FILE}")


def run_experiment(
    cfg: ExperimentConfig,
    workdir: Path,
    callbacks: ExperimentCallbacks | None = None,
    progress: bool = True,
    log_every: int = 20,
) -> ExperimentResult:
    """Load and split the data, build the model, train it (resuming from `workdir/checkpoints/last.ckpt`
    when present), evaluate it on the test split and return metrics, tables and artifact paths.

    Metrics: `segm_*` / `bbox_*` AP, AP50, AP75, APs, APm, APl (percent; NaN where no GT falls in a
    size bucket), `gtbox_mask_iou` (mean mask IoU on the GT boxes, percent: masks without
    detection errors, `shapeprop.eval.gt_boxes`), `infer_s_per_img`, `train_s_per_step`. A NaN/Inf loss raises `NonFiniteLossError`.
    Under DDP, ranks other than global zero return empty metrics.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    callbacks = callbacks or ExperimentCallbacks()
    if cfg.eval.best_overlap and cfg.model.shapeprop is None:
        raise ValueError("eval.best_overlap needs a model with ShapeProp (model.shapeprop is None)")

    records, metadata, fingerprint = prepare_training_records(cfg.data)
    test = source.load_data(cfg.data, cfg.data.test_split)
    test_records = test.records[: cfg.eval.max_images] if cfg.eval.max_images else test.records
    test_print = evaluation_fingerprint(test.metadata, cfg)
    category_ids = resolve_categories(cfg.eval.categories, metadata.classes, metadata.class_groups)

    def build():
        return build_detector(
            cfg.model,
            len(metadata.classes),
            cfg.data.min_size,
            cfg.data.max_size,
            cfg.eval.score_threshold,
            cfg.eval.detections_per_image,
        )

    if cfg.model.pseudo_masks == "box":
        from shapeprop.models.baselines.box_masks import box_pseudo_masks

        records = box_pseudo_masks(records)
    elif cfg.model.pseudo_masks == "grabcut":
        from shapeprop.models.baselines.grabcut import grabcut_pseudo_masks

        records = grabcut_pseudo_masks(records, fingerprint)
    elif cfg.model.pseudo_masks == "progressive":
        from shapeprop.models.baselines.progressive import progressive_pseudo_masks

        records = progressive_pseudo_masks(
            cfg, records, build, workdir / STAGE1_DIR, callbacks, progress, log_every
        )

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build()
    counts = param_counts(model)
    outcome = train_detector(
        model,
        records,
        cfg.data,
        cfg.schedule,
        cfg.seed,
        workdir,
        callbacks,
        progress=progress,
        log_every=log_every,
        identity=checkpoint_identity(cfg),
    )
    if not outcome.is_global_zero:
        return ExperimentResult(
            metrics={}, fingerprint=fingerprint, param_counts=counts, test_fingerprint=test_print
        )

    device = "cuda" if torch.cuda.is_available() else "cpu"
    preds = predict(
        model,
        test_records,
        cfg.data.min_size,
        cfg.data.max_size,
        device=device,
        keep_maps=cfg.eval.best_overlap,
        warmup=2 if cfg.eval.timing else 0,
    )
    # the per-image matches let a report recompute AP on resamples of the test images
    metrics, coco_matches, coco_gt = evaluate_coco(
        test_records, preds.results, metadata.classes, category_ids, matches=True
    )
    gt_box_masks = gt_box_mask_table(model, test_records, cfg.data.min_size, cfg.data.max_size, device)
    metrics["gtbox_mask_iou"] = mean_iou(gt_box_masks, category_ids)
    metrics["infer_s_per_img"] = preds.seconds_per_image
    metrics["train_s_per_step"] = (
        outcome.seconds_per_step if outcome.seconds_per_step is not None else float("nan")
    )
    artifacts: dict[str, Path] = {"checkpoint": outcome.last_checkpoint}
    tables = {"gt_box_masks": gt_box_masks, MATCHES_TABLE: coco_matches, GT_TABLE: coco_gt}
    if cfg.eval.best_overlap:
        tables["best_overlap"] = best_overlap_table(test_records, preds.maps)
    written = {name: _write_csv_atomic(workdir / f"{name}.csv", table) for name, table in tables.items()}
    artifacts["detections"] = _write_json_atomic(workdir / "detections.json", preds.results)
    artifacts["evaluation"] = _write_json_atomic(
        workdir / "evaluation.json",
        {
            "metrics": metrics,
            "param_counts": counts,
            "fingerprint": fingerprint,
            "test_fingerprint": test_print,
            "step": outcome.step,
            "test_split": cfg.data.test_split,
            "num_test_images": len(test_records),
            "categories": None if category_ids is None else [metadata.classes[i] for i in category_ids],
            "config": cfg.model_dump(mode="json"),
        },
    )
    callbacks.on_eval(metrics)
    return ExperimentResult(
        metrics, written, artifacts, fingerprint, counts, test_print, list(metadata.classes)
    )
