"""A finished run's `ExperimentResult` into its MLflow run: metrics, lineage, and the files the
library wrote, uploaded as they are (the harness writes none of them again)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import run_inputs, run_model, tracking
from harness.workdir import CONFIG_FILE, LOG_FILE

if TYPE_CHECKING:
    from shapeprop.config import ExperimentConfig
    from shapeprop.contract import ExperimentResult

MAX_EXTRA_ARTIFACT_BYTES = 50 * 2**20


def log_result(
    c: Any,
    uri: str,
    run_id: str,
    config: ExperimentConfig,
    workdir: Path,
    result: ExperimentResult,
    step: int,
    log_checkpoint: bool = False,
    register_model: str | None = None,
) -> dict[str, float]:
    """Log `result` (its metrics at `step`, parameter counts, fingerprints, files) to run `run_id`;
    returns the metrics logged."""
    metrics = {k: float(v) for k, v in result.metrics.items()}
    metrics.update({f"params_{k}": float(v) for k, v in result.param_counts.items()})
    tracking.log_metrics(c, run_id, metrics, step=step)
    tracking.set_tags(c, run_id, {"dataset_fingerprint": result.fingerprint})
    run_inputs.log_datasets(c, run_id, config, result.fingerprint, result.test_fingerprint)
    _log_files(c, uri, run_id, workdir, result, step, log_checkpoint, register_model)
    return metrics


def _log_files(
    c: Any,
    uri: str,
    run_id: str,
    workdir: Path,
    result: ExperimentResult,
    step: int,
    log_checkpoint: bool,
    register_model: str | None,
) -> None:
    import pandas as pd

    from shapeprop.eval.image_ap import GT_TABLE, MATCHES_TABLE

    def upload(path: Path, artifact_path: str | None = None) -> None:
        tracking.with_retry(lambda: c.log_artifact(run_id, str(path), artifact_path), f"upload {path.name}")

    upload(workdir / CONFIG_FILE)
    artifacts = dict(result.artifacts)
    evaluation = artifacts.pop("evaluation", None)
    if evaluation is not None:
        upload(Path(evaluation))
    for name, path in result.tables.items():
        upload(Path(path))  # the report reads the CSV
        if name not in (MATCHES_TABLE, GT_TABLE):  # a row per detection: no table for the UI's view
            run_inputs.log_table(c, run_id, pd.read_csv(path), f"tables/{name}.json", workdir)
    checkpoint = artifacts.pop("checkpoint", None)
    if log_checkpoint and checkpoint is not None:
        upload(Path(checkpoint), "checkpoints")
    if checkpoint is not None and result.classes:  # a trained model (not a test's stand-in result)
        run_model.log_run_model(
            uri, run_id, workdir / CONFIG_FILE, Path(checkpoint), result.classes, step, register_model
        )
    for name, path in artifacts.items():  # anything else the experiment produced (detections, plots)
        path = Path(path)
        if not path.is_file():
            continue
        if path.stat().st_size > MAX_EXTRA_ARTIFACT_BYTES:  # e.g. COCO-scale detections: keep them local
            tracking.set_tags(c, run_id, {f"local_artifact.{name}": str(path)})
            continue
        upload(path, "outputs")
    if (workdir / LOG_FILE).exists():
        upload(workdir / LOG_FILE)
