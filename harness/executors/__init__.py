"""Executors: where the runs of one invocation execute.

- `InlineExecutor`: one after another in this process.
- `LocalExecutor` (`local.py`): up to N at once, each in fresh worker processes (one per DDP rank);
  with GPUs, each run on its own `schedule.devices` of them (CPU threads split between runs
  otherwise). A worker that dies
  (SIGKILL, segfault, out of memory) yields a crashed outcome instead of stopping the suite;
  workers die with the invoking process (Linux).
- `SlurmExecutor` (`slurm.py`): one submitit array job per run shape (nodes x GPUs, a task per rank); a preempted or timed-out task is
  requeued by submitit and resumes from its run's checkpoint (the job is `Checkpointable`).
  `cluster="local"` runs the same jobs as local processes (tests, laptops).

Every executor takes a `job(spec) -> RunOutcome` that must be picklable for the process-based
ones (a module-level function or a `functools.partial` of one), and yields outcomes as runs end.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.executors.base import InlineExecutor, Job, RunOutcome, rank_env, run_shape
from harness.executors.local import LocalExecutor
from harness.executors.slurm import SlurmExecutor
from harness.suite import RunSpec

__all__ = [
    "InlineExecutor",
    "Job",
    "LocalExecutor",
    "RunOutcome",
    "SlurmExecutor",
    "make_executor",
    "rank_env",
    "run_shape",
]


def make_executor(
    name: str,
    workers: int,
    runs_root: Path,
    suite_name: str,
    log_path: Callable[[RunSpec], Path],
    display: Any | None = None,
    **slurm: Any,
) -> InlineExecutor | LocalExecutor | SlurmExecutor:
    """The executor called `name` (inline | local | slurm); the local one shows its runs' steps on
    `display` (a `harness.console.SuiteProgress`), if given."""
    if name == "inline":
        return InlineExecutor()
    if name == "local":
        return LocalExecutor(workers, log_path, display)
    if name == "slurm":
        return SlurmExecutor(Path(runs_root) / suite_name / "submitit", workers, **slurm)
    raise ValueError(f"unknown executor '{name}' (inline, local, slurm)")
