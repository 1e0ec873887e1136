"""The library's experiment callbacks, logging to one MLflow run (metrics batched and sent beside
training, at the latest at each checkpoint)."""

from __future__ import annotations

import logging
from pathlib import Path
from time import monotonic
from typing import Any

from harness import tracking
from harness.metric_buffer import MetricBuffer
from shapeprop.contract import ExperimentCallbacks

log = logging.getLogger(__name__)


class TrackingCallbacks(ExperimentCallbacks):
    """Experiment callbacks that log to one MLflow run `run_id`: metrics batched and sent without
    stopping training (`harness.metric_buffer.MetricBuffer`: a store that does not answer for a
    while only delays them), in the store at each checkpoint while it answers; with a `display`, they show the
    steps of run `key` as `label`."""

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
        self.buffer = MetricBuffer(
            mlflow_client, run_id, flush_every_s=flush_every_s, skip_until_step=skip_until_step
        )
        self.max_steps: int | None = None
        self.eval_metrics: dict[str, float] = {}
        self._last_window: tuple[float, int] | None = None  # (time, step) of the last logged window

    def on_start(self, max_steps: int, start_step: int) -> None:
        self.max_steps = max_steps
        self._last_window = (monotonic(), start_step)
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
        log.info("%s", self._progress_line(metrics, step))

    def _progress_line(self, metrics: dict[str, float], step: int) -> str:
        """The window's metrics as a line of the run's log (detectron2's log.txt has one too), with
        the speed since the last window and the time left at that speed."""
        now = monotonic()
        total = f"/{self.max_steps}" if self.max_steps else ""
        values = ", ".join(f"{name} {value:.4g}" for name, value in metrics.items())
        line = f"step {step}{total}: {values}"
        if self._last_window is not None and step > self._last_window[1]:
            per_step = (now - self._last_window[0]) / (step - self._last_window[1])
            line += f"; {per_step:.3g} s/step"
            if self.max_steps:
                left = round(per_step * max(self.max_steps - step, 0))
                line += f", {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d} left"
        self._last_window = (now, step)
        return line

    def on_checkpoint(self, path: Path, step: int) -> None:
        # Everything up to a checkpoint is in the store before training goes on (a resume recomputes
        # only what follows it), unless the store does not answer: then it follows once it does,
        # and training goes on meanwhile.
        self.buffer.set_tags({"last_checkpoint_step": str(step)})
        self.buffer.flush(wait_if_down=False)

    def on_eval(self, metrics: dict[str, float]) -> None:
        self.eval_metrics = dict(metrics)

    def flush(self) -> None:
        self.buffer.flush()
