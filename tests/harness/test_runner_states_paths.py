"""More of the runner's state handling on a real SQLite store (issue 22's mutation gaps): what `plan`
decides, which MLflow run `_open_run` reopens, `record_crash`, the other DDP ranks, and what
`run_suite` records for a suite (parent status, crashed outcomes, executor choice, progress).

The store fixtures are in tests/conftest.py and tests/harness/conftest.py, the suite and the stand-in
training in tests/helpers/runner_states.py.
"""

from __future__ import annotations

import json
import time

import pytest

from harness import run_tags, runner, tracking
from harness.executors import InlineExecutor, RunOutcome
from harness.executors.base import failed
from harness.plan import plan
from harness.preflight import PreflightError
from harness.suite import expand, parse_suite
from harness.workdir import workdir_of
from shapeprop.experiment import ExperimentResult
from tests.helpers.runner_states import BASELINE, SECOND, SUITE, children, finish, run_suite, train

OTHER_STORE = "sqlite:////elsewhere/mlflow.db"


class StandIn:
    """An experiment function that records how it was called, trains through the callbacks (if
    any) and returns `result`, or raises `error`."""

    def __init__(self, result=None, error=None):
        self.result, self.error = result or finish(), error
        self.calls = []

    def __call__(self, cfg, workdir, callbacks, progress, **kwargs):
        self.calls.append({"callbacks": callbacks, "progress": progress, "kwargs": kwargs})
        if callbacks is not None:
            train(callbacks, [1, 2, 3, 4])
        if self.error is not None:
            raise self.error
        return self.result


def child_run(uri, key, status, start_time=None) -> str:
    """A child run of the suite's experiment for run key `key`, ended `status` (RUNNING: left open)."""
    c = tracking.client(uri)
    exp_id = tracking.ensure_experiment(c, tracking.experiment_name(SUITE.name))
    run = c.create_run(exp_id, start_time=start_time, tags={"kind": "run", "run_key": key})
    if status != "RUNNING":
        c.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def timed(fn):
    """fn() and the seconds it took."""
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


def artifacts(uri, run_id) -> set[str]:
    return {a.path for a in tracking.client(uri).list_artifacts(run_id)}


# --------------------------------------------------------------------------- plan


def test_plan_skips_finished_resumes_a_work_directory_else_runs(uri, tmp_path):
    """Without --force: a FINISHED key is skipped, one whose work directory holds mlflow.json is
    resumed, any other runs; with --force every key runs from scratch."""
    runs_root = tmp_path / "runs"
    child_run(uri, BASELINE.key, "FINISHED")
    state_file = workdir_of(SECOND, runs_root) / "mlflow.json"

    def decided(**kwargs):
        return {
            p.spec.row: (p.state, p.action) for p in plan(SUITE, "full", uri, runs_root=runs_root, **kwargs)
        }

    assert decided() == {"baseline": ("finished", "skip"), "second seed": ("missing", "run")}
    state_file.parent.mkdir(parents=True)
    state_file.write_text("{}")
    assert decided() == {"baseline": ("finished", "skip"), "second seed": ("missing", "resume")}
    assert decided(force=True) == {"baseline": ("finished", "run"), "second seed": ("missing", "run")}


# --------------------------------------------------------------------------- _open_run


def test_open_run_reopens_only_an_unfinished_active_run(uri, tmp_path):
    """mlflow.json's run is reopened (resumed=True) while it is not FINISHED and not deleted;
    otherwise a new run is made (resumed=False) and mlflow.json then names it."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    c = tracking.client(uri)

    def open_run():
        run_id, resumed = runner._open_run(BASELINE, uri, workdir, None)
        assert json.loads((workdir / "mlflow.json").read_text())["run_id"] == run_id
        return run_id, resumed

    first, resumed = open_run()
    assert resumed is False
    c.set_terminated(first, status="FAILED")
    assert open_run() == (first, True)
    assert c.get_run(first).info.status == "RUNNING"

    c.set_terminated(first, status="FINISHED")
    second, resumed = open_run()
    assert second != first and resumed is False

    c.set_terminated(second, status="FAILED")
    c.delete_run(second)  # deleted in the UI: not reopened
    third, resumed = open_run()
    assert third not in (first, second) and resumed is False


def test_open_run_with_a_run_id_unknown_to_the_store_starts_a_new_run(uri, tmp_path):
    """mlflow.json names this store but a run it does not hold (e.g. a store re-created): new run."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "mlflow.json").write_text(json.dumps({"tracking_uri": uri, "run_id": "0" * 32}))
    run_id, resumed = runner._open_run(BASELINE, uri, workdir, None)
    assert run_id != "0" * 32 and resumed is False
    assert [r.info.run_id for r in children(uri)] == [run_id]


def test_reopened_run_keeps_an_edited_note_and_gets_a_missing_one(uri, tmp_path):
    """Reopening writes the run's description (note) only when it has none: an edited one stays."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    c = tracking.client(uri)
    run_id, _ = runner._open_run(BASELINE, uri, workdir, None)
    note = run_tags.NOTE_TAG

    c.set_tag(run_id, note, "edited in the UI")
    c.set_terminated(run_id, status="FAILED")
    runner._open_run(BASELINE, uri, workdir, None)
    assert c.get_run(run_id).data.tags[note] == "edited in the UI"

    c.delete_tag(run_id, note)  # a run made before the harness wrote notes
    c.set_terminated(run_id, status="FAILED")
    runner._open_run(BASELINE, uri, workdir, None)
    assert c.get_run(run_id).data.tags[note] == run_tags.spec_tags(BASELINE)[note]


# --------------------------------------------------------------------------- run_one


def test_run_one_passes_log_every_and_logs_parameter_counts(uri, tmp_path):
    """`log_every` reaches the experiment only when given; the result's parameter counts are logged as
    `params_<name>` metrics; the outcome is the run's own (not crashed) and its seconds are measured."""
    result = ExperimentResult({"segm_AP": 1.0}, {}, {}, "f" * 64, {"total": 1234}, "e" * 64)
    fn = StandIn(result)
    outcome, seconds = timed(
        lambda: runner.run_one(
            BASELINE, uri, tmp_path / "runs", experiment_fn=fn, progress=False, log_every=50
        )
    )
    assert fn.calls[0]["kwargs"] == {"log_every": 50}
    assert outcome.ok and not outcome.crashed
    assert 0 < outcome.seconds <= seconds
    assert outcome.metrics == {"segm_AP": 1.0, "params_total": 1234.0}
    assert tracking.client(uri).get_run(outcome.run_id).data.metrics["params_total"] == 1234.0

    runner.run_one(SECOND, uri, tmp_path / "runs", experiment_fn=fn, progress=False)
    assert fn.calls[1]["kwargs"] == {}


def test_a_failed_run_keeps_5000_characters_of_its_error_and_uploads_its_log(uri, tmp_path):
    """A failure: the outcome has the whole message, the run's `error` tag its first 5000 characters
    (the full text is in traceback.txt), and the run's log is uploaded beside the traceback."""
    fn = StandIn(error=RuntimeError("x" * 6000))
    outcome, seconds = timed(
        lambda: runner.run_one(BASELINE, uri, tmp_path / "runs", experiment_fn=fn, progress=False)
    )
    assert outcome.status == "FAILED" and not outcome.crashed
    assert outcome.error == "RuntimeError: " + "x" * 6000
    assert 0 < outcome.seconds <= seconds
    run = tracking.client(uri).get_run(outcome.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == outcome.error[:5000]
    assert {"traceback.txt", "run.log"} <= artifacts(uri, outcome.run_id)


def test_run_log_says_whether_the_run_starts_or_resumes(uri, tmp_path):
    """The run's log tells a fresh MLflow run from a reopened one."""
    runs_root = tmp_path / "runs"
    first = runner.run_one(
        BASELINE, uri, runs_root, experiment_fn=StandIn(error=RuntimeError("x")), progress=False
    )
    runner.run_one(BASELINE, uri, runs_root, experiment_fn=StandIn(), progress=False)
    lines = (workdir_of(BASELINE, runs_root) / "run.log").read_text().splitlines()
    opened = [line.split(" into MLflow run ") for line in lines if " into MLflow run " in line]
    assert [(before.split()[-1], run_id) for before, run_id in opened] == [
        ("starts", first.run_id),
        ("resumes", first.run_id),
    ]


def test_run_log_has_a_line_per_metrics_window_with_speed_and_time_left(uri, tmp_path, monkeypatch):
    """Training progress reaches the run's log too (a run in the background shows no bar)."""
    from harness import callbacks as callbacks_module

    clock = iter([100.0, 110.0, 140.0])  # on_start, then the windows ending at steps 2 and 4
    monkeypatch.setattr(callbacks_module, "monotonic", lambda: next(clock))

    def trains(cfg, workdir, callbacks, progress, **_):
        callbacks.on_start(4, 0)
        callbacks.on_metrics({"loss": 0.5, "lr": 0.01}, 2)
        callbacks.on_metrics({"loss": 0.25, "lr": 0.001}, 4)
        return finish()

    runner.run_one(BASELINE, uri, tmp_path / "runs", experiment_fn=trains, progress=False)
    lines = (workdir_of(BASELINE, tmp_path / "runs") / "run.log").read_text().splitlines()
    steps = [line.split(": ", 1)[1] for line in lines if "harness.callbacks: step " in line]
    assert steps == [
        "step 2/4: loss 0.5, lr 0.01; 5 s/step, 0:00:10 left",
        "step 4/4: loss 0.25, lr 0.001; 15 s/step, 0:00:00 left",
    ]


def test_a_store_that_cannot_record_a_kill_does_not_mask_the_kill(uri, tmp_path, monkeypatch):
    """Preempted (submitit's SystemExit) while the store stays locked: the SystemExit still leaves
    run_one, so that submitit requeues the task, and the run's log says what could not be recorded."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    def locked(*args, **kwargs):
        raise MlflowException("(sqlite3.OperationalError) database is locked")

    def preempted(cfg, workdir, callbacks, progress, **_):
        callbacks.on_start(4, 0)
        monkeypatch.setattr(MlflowClient, "set_terminated", locked)
        raise SystemExit(144)

    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    with pytest.raises(SystemExit):
        runner.run_one(BASELINE, uri, tmp_path / "runs", experiment_fn=preempted, progress=False)
    run_log = (workdir_of(BASELINE, tmp_path / "runs") / "run.log").read_text()
    assert "could not record it KILLED: (sqlite3.OperationalError) database is locked" in run_log


def test_other_ranks_train_without_callbacks_and_record_nothing(uri, tmp_path, monkeypatch):
    """A DDP process of rank > 0 trains (no callbacks, no progress bar, `log_every` passed on),
    opens no MLflow run and returns its outcome; its failure is returned, not raised."""
    monkeypatch.setenv("RANK", "1")
    runs_root = tmp_path / "runs"
    fn = StandIn()
    outcome, seconds = timed(
        lambda: runner.run_one(BASELINE, uri, runs_root, experiment_fn=fn, progress=True, log_every=50)
    )
    assert fn.calls == [{"callbacks": None, "progress": False, "kwargs": {"log_every": 50}}]
    assert (outcome.status, outcome.run_id, outcome.error) == ("FINISHED", None, None)
    assert 0 <= outcome.seconds <= seconds

    fn = StandIn(error=RuntimeError("NCCL timeout"))
    outcome, seconds = timed(lambda: runner.run_one(SECOND, uri, runs_root, experiment_fn=fn))
    assert fn.calls[0]["kwargs"] == {}
    assert (outcome.status, outcome.error) == ("FAILED", "RuntimeError: NCCL timeout")
    assert 0 <= outcome.seconds <= seconds
    assert children(uri) == []
    assert not (workdir_of(BASELINE, runs_root) / "mlflow.json").exists()


# --------------------------------------------------------------------------- record_crash


def test_record_crash_without_a_work_directory_records_nothing(uri, tmp_path):
    """A run that died before it opened its MLflow run has nothing to mark."""
    assert runner.record_crash(BASELINE, uri, tmp_path / "runs", "died") is None
    assert children(uri) == []


def test_record_crash_marks_only_a_running_run_of_this_store(uri, tmp_path):
    """The RUNNING run named in mlflow.json is ended with the given status, the reason as its error
    and traceback, and the worker's log uploaded; a run already ended, or one of another store, is
    left as it is."""
    runs_root = tmp_path / "runs"
    workdir = workdir_of(BASELINE, runs_root)
    workdir.mkdir(parents=True)
    run_id, _ = runner._open_run(BASELINE, uri, workdir, None)
    (workdir / "run.log").write_text("step 3\n")
    c = tracking.client(uri)

    state = json.loads((workdir / "mlflow.json").read_text())
    (workdir / "mlflow.json").write_text(json.dumps({**state, "tracking_uri": OTHER_STORE}))
    assert runner.record_crash(BASELINE, uri, runs_root, "died") is None
    assert c.get_run(run_id).info.status == "RUNNING"
    (workdir / "mlflow.json").write_text(json.dumps(state))

    assert runner.record_crash(BASELINE, uri, runs_root, "worker killed: SIGTERM", "KILLED") == run_id
    run = c.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["error"] == "worker killed: SIGTERM"
    assert (workdir / "traceback.txt").read_text() == "worker killed: SIGTERM\n"
    assert {"traceback.txt", "run.log"} <= artifacts(uri, run_id)

    assert runner.record_crash(BASELINE, uri, runs_root, "again") == run_id  # ended: left as it is
    run = c.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["error"] == "worker killed: SIGTERM"


# --------------------------------------------------------------------------- a suite


def test_summary_and_outcome_ok():
    """A suite is ok when no run failed; a run is ok when it FINISHED."""
    done = RunOutcome("k", "row", "FINISHED")
    bad = RunOutcome("k", "row", "FAILED")
    assert done.ok and not bad.ok
    assert runner.SuiteSummary(done=[done]).ok is True
    assert runner.SuiteSummary(done=[done], failed=[bad]).ok is False


def test_a_failed_run_fails_the_parent_and_outcomes_are_counted_in_order(uri, tmp_path):
    """One run failing: the suite goes on, the parent run ends FAILED, on_outcome sees 1/2 then 2/2."""
    seen = []

    def second_fails(cfg, workdir, callbacks, progress, **_):
        train(callbacks, [1, 2, 3, 4])
        if cfg.seed == 1:
            raise RuntimeError("diverged")
        return finish()

    summary = run_suite(
        uri, tmp_path / "runs", second_fails, on_outcome=lambda o, i, n: seen.append((o.row, i, n))
    )
    assert not summary.ok
    assert [o.row for o in summary.done] == ["baseline"]
    assert [o.row for o in summary.failed] == ["second seed"]
    assert seen == [("baseline", 1, 2), ("second seed", 2, 2)]
    parent = tracking.client(uri).get_run(summary.parent_run_id)
    assert parent.info.status == "FAILED"
    assert parent.data.metrics == {"runs_done": 1, "runs_failed": 1, "runs_skipped": 0}


REPRODUCING = parse_suite(
    """
name: states
reproduces: table1
base:
  data: {dataset: synthetic, options: {num_images: 4, image_size: 64}, min_size: 64, max_size: 64}
  model: {backbone: tiny}
  schedule: {max_steps: 4}
rows:
  - {label: baseline, method: mask_rcnn}
  - {label: two gpus, method: mask_rcnn, overrides: {schedule.devices: 2}}
""",
    "states.yaml",
)


def test_forced_suite_on_fresh_work_directories_finishes_its_parent(uri, tmp_path):
    """--force on runs never started (no work directory to discard) runs them; the parent run ends
    FINISHED and names the paper table the suite reproduces."""
    summary = runner.run_suite(
        REPRODUCING,
        runner.RunOptions(
            tracking_uri=uri,
            runs_root=tmp_path / "runs",
            only="baseline",
            force=True,
            experiment_fn=StandIn(),
        ),
    )
    assert summary.ok and [o.row for o in summary.done] == ["baseline"]
    parent = tracking.client(uri).get_run(summary.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["reproduces"] == "table1"


def test_inline_runs_show_progress_on_the_display_or_lightnings_bar(uri, tmp_path):
    """Inline, without a display the experiment draws its own progress bar; with one, the steps go to
    the display and the experiment draws none."""

    class Display:
        def __init__(self):
            self.started = []

        def run_started(self, key, label, max_steps, start_step):
            self.started.append((label, max_steps, start_step))

        def step(self, key, step, loss):
            pass

    fn = StandIn()
    run_suite(uri, tmp_path / "runs", fn, only="baseline")
    display = Display()
    run_suite(uri, tmp_path / "runs", fn, only="second", display=display)
    assert [call["progress"] for call in fn.calls] == [True, False]
    assert display.started == [("second seed [mask_rcnn, seed 1]", 4, 0)]


def test_inline_hands_a_run_of_several_gpus_to_the_local_executor(uri, tmp_path, monkeypatch):
    """A run of several processes cannot run inline: the suite switches to the local executor
    (recorded on the parent run), which gets the display; the runs draw no progress bar of their own."""
    made = []
    display = object()

    def make_executor(name, *args, **kwargs):
        made.append((name, kwargs["display"]))
        return InlineExecutor()  # stands in for the local executor

    monkeypatch.setattr(runner, "make_executor", make_executor)
    fn = StandIn()
    summary = runner.run_suite(
        REPRODUCING,
        runner.RunOptions(tracking_uri=uri, runs_root=tmp_path / "runs", experiment_fn=fn, display=display),
    )
    assert made == [("local", display)]
    assert summary.ok and len(summary.done) == 2
    assert [call["progress"] for call in fn.calls] == [False, False]
    assert tracking.client(uri).get_run(summary.parent_run_id).data.tags["executor"] == "local"


def test_a_crashed_outcome_ends_its_mlflow_run_failed(uri, tmp_path, monkeypatch):
    """A worker that died after opening its MLflow run left it RUNNING: the suite marks it FAILED with
    the executor's reason and reports the run id; the parent ends FAILED."""
    runs_root = (tmp_path / "runs").resolve()
    opened = []

    class DiesAfterOpening:
        def run(self, specs, job):
            for spec in specs:
                workdir = workdir_of(spec, runs_root)
                workdir.mkdir(parents=True)
                opened.append(runner._open_run(spec, uri, workdir, None)[0])
                yield failed(spec, "worker died: signal 9")

    monkeypatch.setattr(runner, "make_executor", lambda *a, **k: DiesAfterOpening())
    summary = run_suite(uri, runs_root, StandIn(), only="baseline")
    (outcome,) = summary.failed
    assert outcome.run_id == opened[0]
    c = tracking.client(uri)
    run = c.get_run(outcome.run_id)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "worker died: signal 9"
    assert c.get_run(summary.parent_run_id).info.status == "FAILED"


def test_a_suite_with_nothing_to_do_is_not_preflighted(uri, tmp_path):
    """Every run FINISHED: nothing is checked, recorded or run, even where the work directories could
    not be made (here under a file)."""
    for spec in expand(SUITE):
        child_run(uri, spec.key, "FINISHED")
    blocked = tmp_path / "a file"
    blocked.write_text("")
    with pytest.raises(PreflightError):  # what would be checked, had there been a run to do
        run_suite(uri, blocked / "runs", StandIn(), force=True)
    summary = run_suite(uri, blocked / "runs", StandIn())
    assert summary.skipped == [BASELINE, SECOND] and summary.parent_run_id is None


# --------------------------------------------------------------------------- key_states


@pytest.mark.parametrize("direct_read", ["works", "fails"])
def test_key_states_of_some_keys_with_or_without_the_direct_read(uri, monkeypatch, direct_read):
    """key_states(keys=...) reports the keys asked for, whatever runs of other keys are newer; when the
    direct SQLite read fails (a schema it does not know), the MLflow client answers the same."""
    baseline = child_run(uri, BASELINE.key, "FAILED", start_time=1000)
    child_run(uri, SECOND.key, "RUNNING", start_time=2000)  # newest
    if direct_read == "fails":
        monkeypatch.setattr(tracking, "_CHILD_RUNS_SQL", "SELECT no_such_column FROM runs")
        assert tracking._child_runs_sqlite(uri, tracking.experiment_name(SUITE.name)) is None
    assert tracking.key_states(uri, SUITE.name, [BASELINE.key]) == {
        BASELINE.key: tracking.KeyState("failed", baseline, "FAILED")
    }
