"""Runs that train the same model share one training: real (4-step) trainings of the library on the
synthetic set, through `run_suite` and a real SQLite store."""

from __future__ import annotations

import json
import os

from harness import run_tags, runner, shared_training, tracking
from harness.plan import plan
from harness.suite import expand, parse_suite
from harness.workdir import LAST_CHECKPOINT, workdir_of
from shapeprop.files import write_atomic
from tests.helpers.runner_states import finish

SUITE = parse_suite(
    """
name: twins
base:
  data: {dataset: synthetic, options: {num_images: 4, image_size: 64}, min_size: 64, max_size: 64}
  model: {backbone: tiny}
  schedule: {max_steps: 4, checkpoint_every: 2}
rows:
  - {label: all images, method: mask_rcnn}
  - {label: two images, method: mask_rcnn, overrides: {eval: {max_images: 2}}}
  - {label: other seed, method: mask_rcnn, overrides: {seed: 1}}
""",
    "twins.yaml",
)
ALL, TWO, OTHER = expand(SUITE)


def run(uri, runs_root, **options):
    opts = runner.RunOptions(tracking_uri=uri, runs_root=runs_root, **options)
    return runner.run_suite(SUITE, opts)


def losses(uri, run_id) -> int:
    return len(tracking.client(uri).get_metric_history(run_id, "loss"))


def same_checkpoint(a, b, runs_root) -> bool:
    """Whether two runs' last checkpoints are one file (a hard link)."""
    return os.path.samefile(
        workdir_of(a, runs_root) / LAST_CHECKPOINT, workdir_of(b, runs_root) / LAST_CHECKPOINT
    )


def test_training_key_ignores_evaluation_only():
    key = shared_training.training_key
    assert key(ALL.config) == key(TWO.config) != key(OTHER.config)
    longer = ALL.config.model_copy(
        update={"schedule": ALL.config.schedule.model_copy(update={"max_steps": 8})}
    )
    assert key(longer) != key(ALL.config)  # resumable, but not the same training
    assert shared_training.first_and_twins([TWO, OTHER, ALL]) == ([TWO, OTHER], [ALL])


def test_a_twin_evaluates_the_finished_training(uri, tmp_path):
    """Real 4-step trainings: the twin loads the first run's last checkpoint and only evaluates."""
    runs_root = tmp_path / "runs"
    summary = run(uri, runs_root, only=["two images", "all images"])
    assert [o.key for o in summary.done] == [ALL.key, TWO.key]
    first, twin = (tracking.client(uri).get_run(o.run_id) for o in summary.done)
    assert losses(uri, first.info.run_id) > 0 and losses(uri, twin.info.run_id) == 0  # it did not train
    assert twin.data.tags[run_tags.TRAINED_BY_TAG] == f"twins/{ALL.key}"
    assert run_tags.TRAINED_BY_TAG not in first.data.tags
    assert same_checkpoint(TWO, ALL, runs_root)
    assert [p.name for p in (workdir_of(TWO, runs_root) / "checkpoints").iterdir()] == ["last.ckpt"]
    # the same model, evaluated on fewer images
    assert json.loads((workdir_of(TWO, runs_root) / "evaluation.json").read_text())["num_test_images"] == 2
    assert twin.data.metrics["train_s_per_step"] == first.data.metrics["train_s_per_step"]


def stand_in(trained: list[str]):
    """An experiment that 'trains' (writes a checkpoint, noted in `trained`) unless its work dir
    already holds one."""

    def experiment(cfg, workdir, callbacks, progress, **_):
        last = workdir / LAST_CHECKPOINT
        if not last.exists():
            trained.append(next(s.key for s in (ALL, TWO, OTHER) if s.config == cfg))
            write_atomic(last, f"trained by {workdir.name}")
        return finish()

    return experiment


def test_twins_go_after_the_others_and_force_trains_again(uri, tmp_path):
    runs_root, trained = tmp_path / "runs", []
    summary = run(uri, runs_root, experiment_fn=stand_in(trained))
    assert [o.key for o in summary.done] == [ALL.key, OTHER.key, TWO.key]
    assert trained == [ALL.key, OTHER.key]
    record = runs_root / shared_training.RECORDS_DIR / f"{shared_training.training_key(ALL.config)}.json"
    assert json.loads(record.read_text())["run_key"] == ALL.key  # the run that trained, not its twin
    forced = run(
        uri, runs_root, experiment_fn=stand_in(trained), force=True, only=["two images", "all images"]
    )
    assert [o.key for o in forced.done] == [ALL.key, TWO.key]
    assert trained[2:] == [ALL.key]  # the first trains again, the twin starts from that training
    assert same_checkpoint(TWO, ALL, runs_root)
    run(uri, runs_root, experiment_fn=stand_in(trained), force=True, only=["two images"])
    assert trained[3:] == [TWO.key]  # a twin forced alone trains too
    assert not same_checkpoint(TWO, ALL, runs_root)


def test_a_twin_whose_training_is_gone_trains(uri, tmp_path):
    runs_root, trained = tmp_path / "runs", []
    run(uri, runs_root, experiment_fn=stand_in(trained), only=["all images"])
    (workdir_of(ALL, runs_root) / LAST_CHECKPOINT).unlink()
    (done,) = run(uri, runs_root, experiment_fn=stand_in(trained), only=["two images"]).done
    assert trained == [ALL.key, TWO.key]
    assert run_tags.TRAINED_BY_TAG not in tracking.client(uri).get_run(done.run_id).data.tags


def test_a_moved_runs_folder_keeps_its_trainings(uri, tmp_path):
    trained = []
    run(uri, tmp_path / "runs", experiment_fn=stand_in(trained), only=["all images"])
    (tmp_path / "runs").rename(tmp_path / "moved")
    (done,) = run(uri, tmp_path / "moved", experiment_fn=stand_in(trained), only=["two images"]).done
    assert trained == [ALL.key]
    assert tracking.client(uri).get_run(done.run_id).data.tags[run_tags.TRAINED_BY_TAG] == f"twins/{ALL.key}"


def test_a_garbled_record_is_passed_over(uri, tmp_path, caplog):
    runs_root, trained = tmp_path / "runs", []
    record = runs_root / shared_training.RECORDS_DIR / f"{shared_training.training_key(ALL.config)}.json"
    record.parent.mkdir(parents=True)
    record.write_text("{not json")
    run(uri, runs_root, experiment_fn=stand_in(trained), only=["two images"])
    assert trained == [TWO.key]
    assert "not a training record" in caplog.text and str(record) in caplog.text


def test_plan_names_the_training_each_run_would_start_from(uri, tmp_path):
    """`plan` says `evaluate` (and whose training) exactly where `run` then trains nothing."""
    runs_root, trained = tmp_path / "runs", []

    def planned(**options):
        return {
            p.spec.row: (p.action, p.trained_by)
            for p in plan(SUITE, "full", uri, runs_root=runs_root, **options)
        }

    first = f"twins/{ALL.key}"
    fresh = {"all images": ("run", None), "two images": ("evaluate", first), "other seed": ("run", None)}
    assert planned() == fresh
    run(uri, runs_root, experiment_fn=stand_in(trained), only=["all images"])
    assert planned(only=["two images"]) == {"two images": ("evaluate", first)}  # the recorded training
    assert planned(force=True) == fresh  # records forgotten; the call's first run trains again
    assert planned(force=True, only=["two images"]) == {"two images": ("run", None)}
    last = workdir_of(ALL, runs_root) / LAST_CHECKPOINT
    saved = last.read_bytes()
    last.unlink()
    assert planned(only=["two images"]) == {"two images": ("run", None)}  # the training is gone
    last.write_bytes(saved)
    run(uri, runs_root, experiment_fn=stand_in(trained), only=["two images", "other seed"])
    assert trained == [ALL.key, OTHER.key]  # as planned: the twin trained nothing
    assert shared_training.trained_by(TWO, runs_root) is None  # its (linked) checkpoint is its own now


def test_the_trained_state_starts_with_the_work_dirs_last_checkpoint():
    """`shared_training` looks for a training by `LAST_CHECKPOINT` (no torch), links `TRAINED_STATE`."""
    from shapeprop.experiment import TRAINED_STATE

    assert TRAINED_STATE[0] == LAST_CHECKPOINT
