"""The runner-state tests' suite and stand-in training (tests/harness/test_runner_states*.py): a
two-run suite on the synthetic set, an `ExperimentResult` to return, and what the library's training
loop reports through the callbacks."""

from __future__ import annotations

from pathlib import Path

from harness import runner, tracking
from harness.suite import expand, parse_suite
from shapeprop.experiment import ExperimentResult

SUITE = parse_suite(
    """
name: states
base:
  data: {dataset: synthetic, options: {num_images: 4, image_size: 64}, min_size: 64, max_size: 64}
  model: {backbone: tiny}
  schedule: {max_steps: 4}
rows:
  - {label: baseline, method: mask_rcnn}
  - {label: second seed, method: mask_rcnn, overrides: {seed: 1}}
""",
    "states.yaml",
)
BASELINE, SECOND = expand(SUITE)


def run_suite(uri, runs_root, experiment_fn, **kwargs):
    options = runner.RunOptions(tracking_uri=uri, runs_root=runs_root, experiment_fn=experiment_fn, **kwargs)
    return runner.run_suite(SUITE, options)


def children(uri: str) -> list:
    """The child runs of the suite's experiment, newest first."""
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(tracking.experiment_name(SUITE.name))
    return tracking.child_runs(c, exp.experiment_id) if exp is not None else []


def finish(artifacts=None) -> ExperimentResult:
    return ExperimentResult({"segm_AP": 1.0}, {}, artifacts or {}, "f" * 64, {}, "e" * 64)


def train(callbacks, steps) -> None:
    """What the library's training loop reports: start, a loss per step, a checkpoint at the last."""
    callbacks.on_start(4, 0)
    for step in steps:
        callbacks.on_metrics({"loss": 1.0 / step}, step)
    callbacks.on_checkpoint(Path("last.ckpt"), steps[-1])
