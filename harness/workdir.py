"""A run's work directory, `<runs root>/<suite>/<run key>/`: the one place that knows its layout.

It holds the run's checkpoints, its resolved config, its log, and `mlflow.json` naming the
MLflow run it logs to (so a run started again after a kill resumes into the same MLflow run).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.suite import RunSpec

DEFAULT_RUNS_ROOT = Path("runs")
STATE_FILE = "mlflow.json"
LOG_FILE = "run.log"
CONFIG_FILE = "config.yaml"
LAST_CHECKPOINT = "checkpoints/last.ckpt"


def run_workdir(runs_root: str | Path, suite: str, run_key: str) -> Path:
    """`<runs root>/<suite>/<run key>` (absolute)."""
    return (Path(runs_root) / suite / run_key).resolve()


def workdir_of(spec: RunSpec, runs_root: str | Path) -> Path:
    """The work directory of a run spec."""
    return run_workdir(runs_root, spec.suite, spec.key)


def log_path_of(spec: RunSpec, runs_root: str | Path) -> Path:
    """The run's log file, `<work dir>/run.log`."""
    return workdir_of(spec, runs_root) / LOG_FILE
