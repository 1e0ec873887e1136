"""What `shapeprop-bench run` would do with each run of a suite: select the runs (`--only`), and
find for each whether it finished, has a work directory to resume, only evaluates another run's
training of the same model (`harness.shared_training`), or is to run (`plan`)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import shared_training, tracking
from harness.suite import RunSpec, Suite, expand
from harness.workdir import DEFAULT_RUNS_ROOT, STATE_FILE, workdir_of
from shapeprop.config import training_key


def select(specs: Iterable[RunSpec], only: Iterable[str] | str | None) -> list[RunSpec]:
    """Runs matching any filter: a glob (with * ? [) or a case-insensitive substring of row label, method or key."""
    filters = [only] if isinstance(only, str) else list(only or [])
    if not filters:
        return list(specs)

    def matches(spec: RunSpec, pattern: str) -> bool:
        fields = (spec.row, spec.method, spec.key)
        if any(ch in pattern for ch in "*?["):
            return any(fnmatch.fnmatchcase(f.lower(), pattern.lower()) for f in fields)
        return any(pattern.lower() in f.lower() for f in fields)

    return [s for s in specs if any(matches(s, f) for f in filters)]


@dataclass
class PlannedRun:
    spec: RunSpec
    state: str  # finished | running | failed | missing (what the store holds for its key)
    action: str  # run | resume | evaluate | skip
    trained_by: str | None = None  # evaluate: "<suite>/<run key>" of the run whose training it evaluates


def plan(
    suite: Suite,
    profile: str,
    tracking_uri: str | None,
    only: Iterable[str] | str | None = None,
    force: bool = False,
    runs_root: str | Path = DEFAULT_RUNS_ROOT,
    overrides: Mapping[str, Any] | None = None,
) -> list[PlannedRun]:
    """What `run` would do with each selected spec: skip (finished), resume (has a work dir), evaluate
    (start from another run's training of its model: a finished one recorded in `runs_root`, or
    one this call trains first) or run. `overrides`: `--set` values (`harness.suite.expand`)."""
    specs = select(expand(suite, profile, overrides), only)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    states = tracking.key_states(uri, suite.name, [s.key for s in specs])
    planned = []
    for spec in specs:
        state = states.get(spec.key, tracking.KeyState("missing")).state
        if state == "finished" and not force:
            action = "skip"
        elif not force and (workdir_of(spec, runs_root) / STATE_FILE).exists():
            action = "resume"
        else:
            action = "run"
        planned.append(PlannedRun(spec, state, action))
    _mark_shared_trainings(planned, Path(runs_root), force)
    return planned


def _mark_shared_trainings(planned: list[PlannedRun], runs_root: Path, force: bool) -> None:
    """Turn into `evaluate` the runs that would start from another's training, as `run_suite` runs
    them: a run without checkpoints of its own starts from a recorded training of its model, else
    from the training of the call's first run of it (which goes first). `--force` deletes the work
    dirs and the records first."""
    trainers: dict[str, str] = {}  # training key -> the call's first run that trains it
    for p in planned:
        if p.action == "skip":
            continue
        key = training_key(p.spec.config)
        if force:
            trainer = trainers.get(key)
        elif shared_training.has_own_training(p.spec, runs_root):
            trainer = None
        else:
            trainer = shared_training.trained_by(p.spec, runs_root) or trainers.get(key)
        if trainer is None:
            trainers.setdefault(key, f"{p.spec.suite}/{p.spec.key}")
        else:
            p.action, p.trained_by = "evaluate", trainer
