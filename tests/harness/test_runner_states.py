"""The runner's branches on a real SQLite store: reopening a FAILED run, `--force`, Ctrl-C, a work
directory whose `mlflow.json` names another store, and extra artifacts too large to upload.

The experiment function is a stand-in (no training) that logs through the real callbacks and
returns a fixed `ExperimentResult`; real training runs through these paths in
tests/e2e/test_harness.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness import runner, tracking
from tests.helpers.runner_states import BASELINE, SECOND, SUITE, children, finish, run_suite, train


def loss_steps(uri: str, run_id: str) -> list[int]:
    return sorted(m.step for m in tracking.client(uri).get_metric_history(run_id, "loss"))


def test_rerun_of_a_failed_run_reopens_the_same_mlflow_run(uri, tmp_path):
    """A FAILED run with a work directory is resumed into the same MLflow run: status RUNNING while
    it trains, the old error cleared, the steps logged before the failure not logged twice."""
    runs_root = tmp_path / "runs"

    def fails_after_step_2(cfg, workdir, callbacks, progress, **_):
        train(callbacks, [1, 2])
        raise RuntimeError("out of memory at step 3")

    first = run_suite(uri, runs_root, fails_after_step_2, only="baseline")
    (failed,) = first.failed
    assert tracking.client(uri).get_run(failed.run_id).info.status == "FAILED"

    seen = {}

    def retrains_from_step_1(cfg, workdir, callbacks, progress, **_):
        run = tracking.client(uri).get_run(failed.run_id)
        seen.update(status=run.info.status, error=run.data.tags.get("error"))
        train(callbacks, [1, 2, 3, 4])  # steps 1-2 again, as a resume from scratch would
        return finish()

    second = run_suite(uri, runs_root, retrains_from_step_1, only="baseline")
    (done,) = second.done
    assert done.run_id == failed.run_id
    assert seen == {"status": "RUNNING", "error": None}
    (run,) = children(uri)  # no second run for the key
    assert run.info.status == "FINISHED" and "error" not in run.data.tags
    assert loss_steps(uri, run.info.run_id) == [1, 2, 3, 4]  # each step once
    # the failed attempt's traceback stays as history
    assert "traceback.txt" in {a.path for a in tracking.client(uri).list_artifacts(run.info.run_id)}


def test_force_discards_the_work_directory_and_trains_a_new_run(uri, tmp_path):
    runs_root = tmp_path / "runs"
    seen = []

    def writes_a_checkpoint(cfg, workdir, callbacks, progress, **_):
        seen.append(sorted(str(p.relative_to(workdir)) for p in Path(workdir).rglob("*")))
        (Path(workdir) / "checkpoints").mkdir(exist_ok=True)
        (Path(workdir) / "checkpoints" / "last.ckpt").write_text("step 4")
        train(callbacks, [1, 2, 3, 4])
        return finish()

    def run(force):
        return run_suite(uri, runs_root, writes_a_checkpoint, only="baseline", force=force)

    (old,) = run(False).done
    assert run(False).skipped == [BASELINE]  # finished: without --force nothing runs
    (new,) = run(True).done
    # the second training started in an empty work directory but for what the harness writes first
    assert seen == [["config.yaml", "mlflow.json", "run.log"]] * 2
    assert new.run_id != old.run_id
    assert {r.info.run_id: r.info.status for r in children(uri)} == {
        old.run_id: "FINISHED",
        new.run_id: "FINISHED",
    }
    state = json.loads((runs_root / SUITE.name / BASELINE.key / "mlflow.json").read_text())
    assert state["run_id"] == new.run_id


def test_ctrl_c_marks_the_run_and_its_parent_killed_and_stops_the_suite(uri, tmp_path):
    started = []

    def interrupted(cfg, workdir, callbacks, progress, **_):
        started.append(cfg.seed)
        callbacks.on_start(4, 0)
        callbacks.on_metrics({"loss": 0.5}, 1)  # buffered, not yet in the store
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_suite(uri, tmp_path / "runs", interrupted)
    assert started == [0]  # the second run never started
    (run,) = children(uri)
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == "KeyboardInterrupt: "
    assert loss_steps(uri, run.info.run_id) == [1]  # what was measured was flushed
    c = tracking.client(uri)
    assert "traceback.txt" in {a.path for a in c.list_artifacts(run.info.run_id)}
    parent = c.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["kind"] == "invocation" and parent.info.status == "KILLED"


def test_a_work_directory_of_another_store_gets_a_new_run_in_this_one(uri, tmp_path, migrated_db):
    """`mlflow.json` names the store it was written for; run against another store, the run starts
    a new MLflow run there and the file then names that one. The other store is a copy of the
    first (same run ids), so reopening the run by its id alone would find it."""
    runs_root = tmp_path / "runs"

    def fails(cfg, workdir, callbacks, progress, **_):
        raise RuntimeError("preempted")

    first = runner.run_one(BASELINE, uri, runs_root, experiment_fn=fails, progress=False)
    assert first.status == "FAILED"
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copyfile(tmp_path / "mlflow.db", copy / "mlflow.db")
    other = f"sqlite:///{copy}/mlflow.db"

    def succeeds(cfg, workdir, callbacks, progress, **_):
        train(callbacks, [1, 2, 3, 4])
        return finish()

    second = runner.run_one(BASELINE, other, runs_root, experiment_fn=succeeds, progress=False)
    assert second.ok and second.run_id != first.run_id
    assert {r.info.run_id: r.info.status for r in children(other)} == {
        first.run_id: "FAILED",  # the copied run, untouched
        second.run_id: "FINISHED",
    }
    assert [(r.info.run_id, r.info.status) for r in children(uri)] == [(first.run_id, "FAILED")]
    state = json.loads((runs_root / SUITE.name / BASELINE.key / "mlflow.json").read_text())
    assert (state["tracking_uri"], state["run_id"]) == (other, second.run_id)


def test_extra_artifacts_over_the_limit_stay_local_with_a_tag(uri, tmp_path):
    runs_root = tmp_path / "runs"

    def writes_outputs(cfg, workdir, callbacks, progress, **_):
        big = Path(workdir) / "detections.json"
        with big.open("wb") as f:
            f.truncate(runner.MAX_EXTRA_ARTIFACT_BYTES + 1)  # sparse: nothing written to disk
        small = Path(workdir) / "curve.png"
        small.write_bytes(b"png")
        return finish({"detections": big, "curve": small})

    outcome = runner.run_one(SECOND, uri, runs_root, experiment_fn=writes_outputs, progress=False)
    assert outcome.ok, outcome.error
    c = tracking.client(uri)
    assert [a.path for a in c.list_artifacts(outcome.run_id, "outputs")] == ["outputs/curve.png"]
    big = runs_root / SUITE.name / SECOND.key / "detections.json"
    tags = c.get_run(outcome.run_id).data.tags
    assert tags["local_artifact.detections"] == str(big)
    assert "local_artifact.curve" not in tags
    assert big.stat().st_size == runner.MAX_EXTRA_ARTIFACT_BYTES + 1  # kept in the work directory
