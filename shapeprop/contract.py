"""What the library and the harness exchange about one run: the callbacks `run_experiment` calls
while it trains, and the `ExperimentResult` it returns. Imports neither torch nor Lightning, so
the harness subclasses the callbacks and types the result without loading them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class ExperimentCallbacks:
    """No-op hooks; the harness subclasses this to log progress (e.g. to MLflow)."""

    def on_start(self, max_steps: int, start_step: int) -> None:
        """Training starts (or resumes) at `start_step` of `max_steps`."""

    def on_step(self, step: int, loss: float | None) -> None:
        """A training step ended: `step` steps done, `loss` its total loss (a float on the host:
        reading it costs no device sync). For progress displays; called every step."""

    def on_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Training losses averaged over the last logging window, plus `lr`, at `step`."""

    def on_checkpoint(self, path: Path, step: int) -> None:
        """A checkpoint was written at `step`."""

    def on_eval(self, metrics: dict[str, float]) -> None:
        """The final evaluation metrics."""


@dataclass(frozen=True)
class ExperimentResult:
    """Final metrics (percent for AP), the files the run wrote, data lineage and parameter counts.

    The library writes every file (atomically) in the run's work directory; a file's name is its
    artifact name. `tables`: the per-object CSV tables, `<name>.csv` each (one row per detection,
    ground-truth object or image). `artifacts`: the other files: `checkpoint`, `evaluation`
    (`evaluation.json`), `detections`, and any a later version adds.

    `classes` are the model's class names (index = 0-based `category_id`), which a served model
    reports. Data lineage: `fingerprint` is the training split's (`split_fingerprint`: annotations, mask
    supervision, data fraction, split seed), `test_fingerprint` the evaluated images' (`evaluation_fingerprint`).
    """

    metrics: dict[str, float]
    tables: dict[str, Path] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)
    fingerprint: str = ""
    param_counts: dict[str, int] = field(default_factory=dict)
    test_fingerprint: str = ""
    classes: list[str] = field(default_factory=list)
