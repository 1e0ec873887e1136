"""A run's inputs and tables as MLflow shows them: the training and test sets as MLflow dataset
inputs (the runs table's Dataset column), result tables as MLflow tables."""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.tracking import with_retry

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from shapeprop.config import ExperimentConfig

DATASET_CONTEXT_TAG = "mlflow.data.context"
MAX_DATASET_DIGEST = 12  # of the split fingerprint (MLflow stores at most 36 characters)


def data_source(data_cfg: Any, split: str) -> tuple[str, str]:
    """(MLflow source type, source JSON) of split `split` of a run's data: its annotation file (a
    dataset given by its files), its root directory, or for a dataset read from its default place
    (the synthetic generator's cache) the dataset and its options."""
    if data_cfg.files:
        return "local", json.dumps({"uri": data_cfg.files[split].annotations})
    if data_cfg.root is not None:
        return "local", json.dumps({"uri": str(Path(data_cfg.root).expanduser())})
    return "code", json.dumps(
        {"dataset": data_cfg.dataset, "options": dict(data_cfg.options)}, sort_keys=True
    )


def run_datasets(config: ExperimentConfig, train_fingerprint: str, test_fingerprint: str) -> list[Any]:
    """The training and test sets of a run as MLflow `DatasetInput`s: name `<dataset>/<split>`,
    digest the first characters of the split's fingerprint (the whole one is in the profile),
    context `training` / `evaluation`. A set without a fingerprint is left out."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    data = config.data
    sets = [
        (
            data.train_split,
            train_fingerprint,
            "training",
            {
                "masks": data.masks.model_dump(mode="json", exclude_none=True),
                "data_fraction": data.data_fraction,
                "split_seed": data.split_seed,
            },
        ),
        (data.test_split, test_fingerprint, "evaluation", {"max_images": config.eval.max_images}),
    ]
    inputs = []
    for split, fingerprint, context, profile in sets:
        if not fingerprint:
            continue
        source_type, source = data_source(data, split)
        dataset = Dataset(
            name=f"{data.dataset}/{split}",
            digest=fingerprint[:MAX_DATASET_DIGEST],
            source_type=source_type,
            source=source,
            profile=json.dumps({"fingerprint": fingerprint, **profile}, sort_keys=True),
        )
        inputs.append(DatasetInput(dataset, tags=[InputTag(DATASET_CONTEXT_TAG, context)]))
    return inputs


def log_datasets(
    mlflow_client: MlflowClient,
    run_id: str,
    config: ExperimentConfig,
    train_fingerprint: str,
    test_fingerprint: str = "",
) -> None:
    """Log the run's training and test sets (`run_datasets`) as its MLflow dataset inputs."""
    from mlflow.exceptions import MlflowException

    inputs = run_datasets(config, train_fingerprint, test_fingerprint)
    if not inputs:
        return

    def log() -> None:
        with_retry(lambda: mlflow_client.log_inputs(run_id, datasets=inputs), "log datasets")

    try:
        log()
    except MlflowException as err:
        # Runs that log the same new dataset at once race in MLflow's store, which looks a dataset
        # up and then inserts it: the loser breaks the unique key. The winner's row exists by then,
        # so a second call only links it to the run.
        if not is_duplicate_key(err):
            raise
        log()


def is_duplicate_key(err: Exception) -> bool:
    """Whether a store error is a unique key violated (SQLite, PostgreSQL, MySQL wording)."""
    text = str(err).lower()
    return "unique constraint" in text or "duplicate entry" in text


def log_table(
    mlflow_client: MlflowClient, run_id: str, table: Any, artifact_file: str, workdir: Path
) -> None:
    """A DataFrame as an MLflow table (`MlflowClient.log_table`, JSON: the UI's artifact view shows
    it as a table, `mlflow.load_table` reads it). log_table appends to a table already in the run,
    so for a resumed run whose earlier attempt logged it the file is replaced instead (written in
    log_table's format under `workdir`)."""
    directory = posixpath.dirname(artifact_file) or None
    existing = with_retry(
        lambda: [a.path for a in mlflow_client.list_artifacts(run_id, directory)], "list artifacts"
    )
    if artifact_file not in existing:
        with_retry(
            lambda: mlflow_client.log_table(run_id, table, artifact_file), f"log table {artifact_file}"
        )
        return
    local = Path(workdir) / artifact_file
    local.parent.mkdir(parents=True, exist_ok=True)
    table.to_json(local, orient="split", index=False, date_format="iso")
    with_retry(lambda: mlflow_client.log_artifact(run_id, str(local), directory), f"upload {artifact_file}")
