"""A finished run's model in MLflow: logged by the runner as an MLflow Model (the pyfunc of
`shapeprop.serving`, at `runs:/<run id>/model`), optionally registered in the Model Registry, and
found again by `predict` from a run or a model URI."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import tracking

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

MODEL_NAME = "model"  # the model of run <id> is runs:/<id>/model


def model_uri(run_id: str) -> str:
    return f"runs:/{run_id}/{MODEL_NAME}"


def log_run_model(
    uri: str,
    run_id: str,
    config: Path,
    checkpoint: Path,
    classes: Sequence[str],
    step: int,
    register_as: str | None = None,
) -> ModelInfo:
    """Log the run's trained detector (its `config` file, the weights of `checkpoint`, its
    `classes`) as the MLflow Model `runs:/<run_id>/model`, linked to the run's metrics at `step`,
    and with `register_as` register it as a new version of that registered model."""
    import mlflow.pyfunc
    from mlflow.models import Model

    from shapeprop import serving

    c = tracking.client(uri)
    run = c.get_run(run_id)
    # Created here, in the run's experiment: `Model.log` would create it in the fluent API's
    # current experiment (the Default one).
    logged = tracking.with_retry(
        lambda: c.create_logged_model(run.info.experiment_id, MODEL_NAME, run_id, params=run.data.params),
        "create the logged model",
    )
    # MLflow logs models to the fluent tracking URI only (the harness passes its store explicitly)
    with tempfile.TemporaryDirectory(prefix="shapeprop-model-") as tmp, tracking.fluent_uri(uri):
        artifacts = serving.write_artifacts(Path(tmp), config, checkpoint, classes)
        # no `with_retry`: a second try would upload into a model the first may have finalized
        return Model.log(
            artifact_path=None,  # deprecated for `name`, but still positional
            name=MODEL_NAME,
            model_id=logged.model_id,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            step=step,
            registered_model_name=register_as,
            python_model=serving.ShapePropModel(),
            artifacts=artifacts,
            signature=serving.SIGNATURE,
            pip_requirements=serving.pip_requirements(),
        )


def load(uri: str, model: str, device: str | None = None) -> Any:
    """`mlflow.pyfunc.load_model(model)` from the store at `uri`, to run on `device` (None: the GPU
    if there is one); a ValueError if it is not the model of a run (`shapeprop.serving`)."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    from shapeprop.serving import ShapePropModel

    with tracking.fluent_uri(uri), tracking.quiet_downloads():
        loaded = mlflow.pyfunc.load_model(model)
    try:
        python_model = loaded.unwrap_python_model()
    except MlflowException:  # a pyfunc of another flavor
        python_model = None
    if not isinstance(python_model, ShapePropModel):
        raise ValueError(f"{model} is an MLflow Model, but not the model of a shapeprop-bench run")
    if device:
        python_model.device = device
    return loaded
