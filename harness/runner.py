"""Running suites: one run spec into one MLflow run (`run_one`), a whole suite (`run_suite`).
What a `run` would do is `harness.plan`.

`run_one` wraps the library's `run_experiment` (injectable for tests). Each run owns a work
directory `<runs root>/<suite>/<run key>/` holding its checkpoints, its resolved config, its
log, and `mlflow.json` with the MLflow run it logs to: started again after a kill, the run
finds that file, resumes from its last checkpoint and logs into the same MLflow run.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import plugins, run_tags, shared_training, tracking
from harness.callbacks import TrackingCallbacks
from harness.executors import RunOutcome, make_executor, run_shape
from harness.plan import PlannedRun, plan
from harness.preflight import preflight
from harness.retry import StoreUnavailable
from harness.run_result import MAX_EXTRA_ARTIFACT_BYTES as MAX_EXTRA_ARTIFACT_BYTES
from harness.run_result import log_result
from harness.run_tags import flatten_config
from harness.suite import RunSpec, Suite
from harness.workdir import CONFIG_FILE, DEFAULT_RUNS_ROOT, LOG_FILE, STATE_FILE, log_path_of, workdir_of
from shapeprop.contract import ExperimentResult
from shapeprop.engine.launch import launched_rank
from shapeprop.files import write_atomic

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- one run


def _open_run(spec: RunSpec, uri: str, workdir: Path, parent_run_id: str | None) -> tuple[str, bool]:
    """The MLflow run of this spec: the one in `workdir/mlflow.json` if it is not finished, else a new one."""
    from mlflow.exceptions import MlflowException

    c = tracking.client(uri)
    state_path = workdir / STATE_FILE
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if state.get("tracking_uri") == uri:
            try:
                run = c.get_run(state["run_id"])
            except MlflowException:
                run = None
            if run is not None and run.info.status != "FINISHED" and run.info.lifecycle_stage == "active":
                tracking.with_retry(lambda: c.update_run(run.info.run_id, status="RUNNING"), "reopen run")
                if "error" in run.data.tags:  # an earlier attempt failed; its traceback.txt stays as history
                    tracking.with_retry(lambda: c.delete_tag(run.info.run_id, "error"), "clear error tag")
                tags = {**run_tags.environment_tags(), "pid": str(os.getpid())}
                # MLflow's source tags and the description, for a run made before the harness wrote them
                described = run_tags.spec_tags(spec)
                tags.update({k: v for k, v in described.items() if k.startswith("mlflow.source.")})
                if run_tags.NOTE_TAG not in run.data.tags:
                    tags[run_tags.NOTE_TAG] = described[run_tags.NOTE_TAG]
                tracking.set_tags(c, run.info.run_id, tags)
                return run.info.run_id, True
    exp_id = tracking.ensure_experiment(c, tracking.experiment_name(spec.suite))
    tags = {**run_tags.spec_tags(spec), **run_tags.environment_tags(), "pid": str(os.getpid())}
    if parent_run_id:
        tags[tracking.PARENT_TAG] = parent_run_id
    run = tracking.with_retry(lambda: c.create_run(exp_id, tags=tags), "create run")
    run_id = run.info.run_id
    tracking.log_params(c, run_id, flatten_config(spec.config))
    write_atomic(state_path, json.dumps({"tracking_uri": uri, "run_id": run_id, "run_key": spec.key}))
    return run_id, False


def run_one(
    spec: RunSpec,
    tracking_uri: str,
    runs_root: str | Path = DEFAULT_RUNS_ROOT,
    parent_run_id: str | None = None,
    experiment_fn: Callable[..., ExperimentResult] | None = None,
    *,
    log_checkpoint: bool = False,
    progress: bool = True,
    flush_every_s: float = 15.0,
    log_every: int | None = None,
    display: Any | None = None,
    register_model: str | None = None,
) -> RunOutcome:
    """Run one spec into one MLflow child run and return how it ended.

    A finished run logs its trained model as the MLflow Model `runs:/<run id>/model`
    (`harness.run_model`), registered as a new version of `register_model` when given.

    A failure inside the experiment is recorded (status FAILED, `traceback.txt` artifact, tag
    `error`) and returned, never raised; Ctrl-C marks the run KILLED and is re-raised.
    `experiment_fn` defaults to `shapeprop.experiment.run_experiment` and is called as
    `fn(cfg, workdir, callbacks, progress)`, plus `log_every=` (training steps per metrics window)
    when `log_every` is given.

    A run of several processes (DDP) calls this in every process; only global rank 0 (`RANK`, set
    by the executors) opens and logs the MLflow run, the others train their share silently.
    """
    plugins.load_all()  # a worker process registers the plugins its parent loaded
    if experiment_fn is None:
        from shapeprop.experiment import run_experiment as experiment_fn
    started = time.monotonic()
    workdir = workdir_of(spec, runs_root)
    workdir.mkdir(parents=True, exist_ok=True)
    trained_by = shared_training.adopt_training(spec, Path(runs_root))  # in every rank, before training
    if launched_rank() != 0:
        return _run_other_rank(spec, workdir, experiment_fn, log_every)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    run_id, resumed = _open_run(spec, uri, workdir, parent_run_id)
    c = tracking.client(uri)

    config_path = workdir / CONFIG_FILE
    write_atomic(config_path, yaml.safe_dump(spec.config.model_dump(mode="json"), sort_keys=False))
    skip = tracking.last_logged_step(c, run_id) if resumed else -1
    callbacks = TrackingCallbacks(c, run_id, skip, flush_every_s, display, spec.key, spec.describe())

    handler = logging.FileHandler(workdir / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    previous_level = root.level
    root.setLevel(min(previous_level, logging.INFO) if previous_level else logging.INFO)
    log.info(
        "run %s (%s) %s into MLflow run %s",
        spec.key,
        spec.describe(),
        "resumes" if resumed else "starts",
        run_id,
    )
    if trained_by is not None:
        log.info("run %s starts from the finished training of run %s", spec.key, trained_by)
        tracking.set_tags(c, run_id, {run_tags.TRAINED_BY_TAG: trained_by})
    try:
        extra = {"log_every": log_every} if log_every else {}
        result: ExperimentResult = experiment_fn(spec.config, workdir, callbacks, progress, **extra)
        callbacks.flush()
        final_step = callbacks.max_steps or spec.config.schedule.max_steps
        metrics = log_result(
            c, uri, run_id, spec.config, workdir, result, final_step, log_checkpoint, register_model
        )
        tracking.with_retry(lambda: c.set_terminated(run_id, status="FINISHED"), "finish run")
        shared_training.record_training(spec, Path(runs_root))  # the run its twins start from
        log.info("run %s finished", spec.key)
        return RunOutcome(
            spec.key, spec.row, "FINISHED", run_id, metrics=metrics, seconds=time.monotonic() - started
        )
    except BaseException as err:
        status = "KILLED" if isinstance(err, (KeyboardInterrupt, SystemExit)) else "FAILED"
        message = f"{type(err).__name__}: {err}"
        if _out_of_space(err) is not None:
            message = (
                f"no space left to write in the runs folder {Path(runs_root).resolve()} "
                f"({_out_of_space(err)}); free some there, or pass --runs-dir <a folder with space>, and "
                "run the suite again: the run resumes from its last whole checkpoint"
            )
        if isinstance(err, StoreUnavailable):  # nothing can be recorded there: say where things are
            message = (
                f"the tracking store {uri} did not answer: {err}. The run's checkpoints are kept in "
                f"{workdir / 'checkpoints'}; run the suite again once the store answers: the run resumes"
            )
        log.error("run %s %s: %s", spec.key, status.lower(), message)
        try:
            if isinstance(err, StoreUnavailable):
                (workdir / "traceback.txt").write_text(traceback.format_exc())
            else:
                _record_failure(c, run_id, workdir, status, message, traceback.format_exc(), callbacks)
        except Exception as record_error:  # e.g. a store still locked: what stopped the run goes on
            # (a preempted Slurm task must still exit as preempted, to be requeued)
            log.error("run %s: could not record it %s: %s", spec.key, status, record_error)
        if status == "KILLED":
            raise
        return RunOutcome(
            spec.key, spec.row, status, run_id, error=message, seconds=time.monotonic() - started
        )
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()


def _out_of_space(err: BaseException | None) -> OSError | None:
    """The OSError behind `err` that says a file system is full (or a quota or file-size limit
    reached), if any."""
    import errno

    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _run_other_rank(
    spec: RunSpec, workdir: Path, experiment_fn: Callable[..., Any], log_every: int | None
) -> RunOutcome:
    """A DDP process other than global rank 0: it trains its part of every batch and records nothing
    (rank 0 owns the MLflow run, the checkpoints and the evaluation). Its outcome is not the run's."""
    started = time.monotonic()
    extra = {"log_every": log_every} if log_every else {}
    try:
        experiment_fn(spec.config, workdir, None, False, **extra)
    except Exception as err:
        message = f"{type(err).__name__}: {err}"
        return RunOutcome(spec.key, spec.row, "FAILED", error=message, seconds=time.monotonic() - started)
    return RunOutcome(spec.key, spec.row, "FINISHED", seconds=time.monotonic() - started)


def _record_failure(
    c: Any,
    run_id: str,
    workdir: Path,
    status: str,
    message: str,
    trace: str,
    callbacks: TrackingCallbacks | None,
) -> None:
    """Flush what was measured, attach the traceback and the log, mark the run FAILED/KILLED."""
    try:
        if callbacks is not None:
            callbacks.flush()
        trace_path = workdir / "traceback.txt"
        trace_path.write_text(trace)
        tracking.with_retry(lambda: c.log_artifact(run_id, str(trace_path)), "upload traceback")
        if (workdir / LOG_FILE).exists():
            tracking.with_retry(lambda: c.log_artifact(run_id, str(workdir / LOG_FILE)), "upload log")
        tracking.set_tags(c, run_id, {"error": message[:5000]})
    finally:
        tracking.with_retry(lambda: c.set_terminated(run_id, status=status), "terminate run")


def record_crash(
    spec: RunSpec, tracking_uri: str, runs_root: str | Path, reason: str, status: str = "FAILED"
) -> str | None:
    """Mark the unfinished run of a process that ended without reporting (died, or was stopped) as
    `status`; returns its run id, if it has one."""
    workdir = workdir_of(spec, runs_root)
    state_path = workdir / STATE_FILE
    if not state_path.exists():
        return None
    state = json.loads(state_path.read_text())
    uri = tracking.resolve_tracking_uri(tracking_uri)
    if state.get("tracking_uri") != uri:
        return None
    c = tracking.client(uri)
    if c.get_run(state["run_id"]).info.status != "RUNNING":
        return state["run_id"]
    _record_failure(c, state["run_id"], workdir, status, reason, reason + "\n", None)
    return state["run_id"]


# --------------------------------------------------------------------------- a suite


@dataclass
class SuiteSummary:
    done: list[RunOutcome] = field(default_factory=list)
    failed: list[RunOutcome] = field(default_factory=list)
    skipped: list[RunSpec] = field(default_factory=list)
    parent_run_id: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class RunOptions:
    """How `run_suite` selects and runs a suite's runs: the `run` command's options.

    `only`, `overrides` and `force` select as in `harness.plan.plan`. `check`: preflight first.
    `on_outcome(outcome, i, n)` is called as runs end, `on_start(planned)` once the preflight
    passed; given a `display` (a
    `harness.console.SuiteProgress`), inline and local runs show their steps on it (slurm runs
    only their ends), inline runs without one on Lightning's progress bar.
    """

    profile: str = "full"
    tracking_uri: str | None = None
    runs_root: str | Path = DEFAULT_RUNS_ROOT
    only: tuple[str, ...] | str = ()
    overrides: Mapping[str, Any] = field(default_factory=dict)
    force: bool = False
    executor: str = "inline"
    workers: int = 1
    slurm: Mapping[str, Any] | None = None
    check: bool = True
    log_checkpoint: bool = False
    register_model: str | None = None
    log_every: int | None = None
    experiment_fn: Callable[..., ExperimentResult] | None = None
    display: Any | None = None
    on_outcome: Callable[[RunOutcome, int, int], None] | None = None
    on_start: Callable[[Sequence[PlannedRun]], None] | None = None  # after the preflight

    def plan(self, suite: Suite) -> list[PlannedRun]:
        """What `run_suite(suite, self)` would do with each selected run."""
        return plan(
            suite, self.profile, self.tracking_uri, self.only, self.force, self.runs_root, self.overrides
        )


def run_suite(
    suite: Suite, options: RunOptions = RunOptions(), planned: Sequence[PlannedRun] | None = None
) -> SuiteSummary:
    """Run every planned spec of `suite` that is not to be skipped and summarise. `planned` is
    `options.plan(suite)`, made here unless the caller (the CLI, which shows it) made it already.

    First (unless `options.check` is False) `harness.preflight.preflight` checks the data, weights
    and output folders of the runs to do; a problem raises `PreflightError` before anything is
    recorded in MLflow or submitted.

    One parent MLflow run per call (tag kind=invocation); each spec logs into its own nested
    run, and a finished one its model (registered as a new version of `register_model`, if given).
    A failing run is recorded and the suite goes on.
    """
    o = options
    uri = tracking.resolve_tracking_uri(o.tracking_uri)
    runs_root = Path(o.runs_root).resolve()
    planned = o.plan(suite) if planned is None else planned
    summary = SuiteSummary(skipped=[p.spec for p in planned if p.action == "skip"])
    todo = [p.spec for p in planned if p.action != "skip"]
    if todo and o.check:
        preflight(todo, runs_root, uri, o.profile)  # before anything is recorded or submitted
    if o.force:  # here, not in each run's processes: a DDP rank must never see its files vanish
        for spec in todo:
            shutil.rmtree(workdir_of(spec, runs_root), ignore_errors=True)
        shared_training.forget_trainings(todo, runs_root)  # forced runs train again
    executor = o.executor
    if executor == "inline" and any(run_shape(spec) != (1, 1) for spec in todo):
        executor = "local"  # a run of several processes needs them started (one run at a time)
    if o.on_start is not None:
        o.on_start(planned)
    if not todo:
        return summary

    parent = tracking.start_invocation(
        uri,
        suite.name,
        {
            "profile": o.profile,
            "reproduces": suite.reproduces or "",
            "executor": executor,
            "only": " | ".join([o.only] if isinstance(o.only, str) else list(o.only)),
            "overrides": " ".join(f"{k}={v}" for k, v in o.overrides.items()),
            "runs_planned": str(len(todo)),
            "runs_skipped": str(len(summary.skipped)),
        },
    )
    summary.parent_run_id = parent
    is_inline = executor == "inline"
    job = functools.partial(
        run_one,
        tracking_uri=uri,
        runs_root=runs_root,
        parent_run_id=parent,
        experiment_fn=o.experiment_fn,
        log_checkpoint=o.log_checkpoint,
        register_model=o.register_model,
        progress=is_inline and o.display is None,
        display=o.display if is_inline else None,
        log_every=o.log_every,
    )
    runner = make_executor(
        executor,
        o.workers,
        runs_root,
        suite.name,
        log_path=functools.partial(log_path_of, runs_root=runs_root),
        display=o.display,
        **(o.slurm or {}),
    )
    specs_by_key = {s.key: s for s in todo}
    status = "FINISHED"
    try:
        # runs that train the same model as an earlier one of the call go after all the others, to
        # start from its finished training
        first, twins = shared_training.first_and_twins(todo)
        outcomes = itertools.chain(runner.run(first, job), runner.run(twins, job))
        for i, outcome in enumerate(outcomes, start=1):
            if outcome.crashed:
                outcome.run_id = record_crash(
                    specs_by_key[outcome.key], uri, runs_root, outcome.error or "crashed"
                )
            (summary.done if outcome.ok else summary.failed).append(outcome)
            if o.on_outcome is not None:
                o.on_outcome(outcome, i, len(todo))
        if summary.failed:
            status = "FAILED"
    except BaseException:
        status = "KILLED"
        raise
    finally:
        tracking.end_run(
            uri,
            parent,
            status,
            {
                "runs_done": len(summary.done),
                "runs_failed": len(summary.failed),
                "runs_skipped": len(summary.skipped),
            },
        )
    return summary
