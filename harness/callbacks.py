"""The library's experiment callbacks, logging to one MLflow run (metrics batched, flushed at
checkpoints)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from harness import tracking


class TrackingHooks:
    """Experiment callbacks that log to one MLflow run: metrics batched, flushed at checkpoints.

    Mixed into the library's `ExperimentCallbacks` by `tracking_callbacks` (so hooks the
    library adds later default to its no-ops); importing the library is deferred because it
    loads torch and Lightning, which `plan` and `status` do not need.
    """

    def __init__(
        self,
        mlflow_client: Any,
        run_id: str,
        skip_until_step: int = -1,
        flush_every_s: float = 15.0,
        display: Any | None = None,
        key: str = "",
        label: str = "",
    ):
        # a SuiteProgress (harness.console) or a worker's pipe to one, or None; the run's key and label
        self.display, self.key, self.label = display, key, label
        self.client = mlflow_client
        self.run_id = run_id
        self.buffer = tracking.MetricBuffer(
            mlflow_client, run_id, flush_every_s=flush_every_s, skip_until_step=skip_until_step
        )
        self.max_steps: int | None = None
        self.eval_metrics: dict[str, float] = {}

    def on_start(self, max_steps: int, start_step: int) -> None:
        self.max_steps = max_steps
        tags = {"max_steps": str(max_steps)}
        if start_step > 0:
            tags["resumed_from_step"] = str(start_step)
        tracking.set_tags(self.client, self.run_id, tags)
        if self.display is not None:
            self.display.run_started(self.key, self.label, max_steps, start_step)

    def on_step(self, step: int, loss: float | None) -> None:
        if self.display is not None:
            self.display.step(self.key, step, loss)

    def on_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.buffer.add(metrics, step)

    def on_checkpoint(self, path: Path, step: int) -> None:
        # Everything up to a checkpoint is in the store: a resume recomputes only what follows it.
        self.buffer.flush()
        tracking.set_tags(self.client, self.run_id, {"last_checkpoint_step": str(step)})

    def on_eval(self, metrics: dict[str, float]) -> None:
        self.eval_metrics = dict(metrics)

    def flush(self) -> None:
        self.buffer.flush()


@functools.cache
def _tracking_callbacks_class() -> type:
    from shapeprop.experiment import ExperimentCallbacks

    return type("TrackingCallbacks", (TrackingHooks, ExperimentCallbacks), {"__module__": __name__})


def tracking_callbacks(
    mlflow_client: Any,
    run_id: str,
    skip_until_step: int = -1,
    flush_every_s: float = 15.0,
    display: Any | None = None,
    key: str = "",
    label: str = "",
) -> TrackingHooks:
    """An `ExperimentCallbacks` that logs to MLflow run `run_id` (see `TrackingHooks`) and, with a
    `display`, shows the steps of run `key` as `label`."""
    return _tracking_callbacks_class()(
        mlflow_client, run_id, skip_until_step, flush_every_s, display, key, label
    )
