"""What MLflow's own UI reads, on a real SQLite store: the experiment kind (also of an experiment made
before the harness set it), MLflow's system tags, run names and descriptions of the parent and
child runs, the training and test sets as dataset inputs, and the result tables as MLflow tables.

The experiment function is a stand-in that returns a fixed `ExperimentResult` (no training: the
real experiment's datasets and tables are checked in tests/e2e/test_harness.py).
"""

from __future__ import annotations

import json
import shlex
import sys

import pandas as pd
import pytest
from mlflow.utils import mlflow_tags

from harness import run_inputs, run_tags, runner, tracking
from harness.suite import expand, parse_suite
from shapeprop.experiment import ExperimentResult
from shapeprop.files import write_atomic

SUITE_YAML = """
name: ui-meta
reproduces: table4
base:
  data: {dataset: synthetic, options: {num_images: 4, image_size: 64}, min_size: 64, max_size: 64}
  model: {backbone: tiny}
  schedule: {max_steps: 2}
  eval: {max_images: 3}
rows:
  - {label: baseline, method: mask_rcnn}
  - {label: second seed, method: mask_rcnn, overrides: {seed: 1}}
profiles:
  mini: {overrides: {schedule.max_steps: 1}}
"""
SUITE = parse_suite(SUITE_YAML, "ui-meta.yaml")
TRAIN_PRINT = "a" * 24 + "1" * 40
TEST_PRINT = "b" * 24 + "2" * 40
BEST_OVERLAP = pd.DataFrame(
    {"image_id": [1, 1, 2], "category": ["disc", "square", "disc"], "iou": [0.5, 0.25, 1.0]}
)
GT_BOX_MASKS = pd.DataFrame({"image_id": [1, 2], "category_id": [0, 1], "iou": [0.75, 0.5]})


def fake_experiment(cfg, workdir, callbacks, progress, **_):
    """A finished experiment: metrics, the two per-object tables, both fingerprints."""
    callbacks.on_start(cfg.schedule.max_steps, 0)
    callbacks.on_metrics({"loss": 1.0}, 1)
    tables = {"best_overlap": BEST_OVERLAP, "gt_box_masks": GT_BOX_MASKS}
    tables = {
        name: write_atomic(workdir / f"{name}.csv", t.to_csv(index=False)) for name, t in tables.items()
    }
    metrics = {"segm_AP": 12.5 + cfg.seed, "bbox_AP": 20.0}
    return ExperimentResult(metrics, tables, {}, TRAIN_PRINT, {"total": 10}, TEST_PRINT)


@pytest.fixture
def uri(tmp_path, migrated_db):
    (tmp_path / "mlflow.db").write_bytes(migrated_db.read_bytes())
    return f"sqlite:///{tmp_path}/mlflow.db"


def run(uri, tmp_path, profile="mini", **kwargs):
    options = runner.RunOptions(profile, uri, tmp_path / "runs", experiment_fn=fake_experiment, **kwargs)
    summary = runner.run_suite(SUITE, options)
    assert summary.ok and summary.parent_run_id, summary
    return summary


@pytest.fixture
def suite_run(uri, tmp_path):
    """One invocation of the two rows (profile mini) into a fresh store: (client, summary, children by row)."""
    summary = run(uri, tmp_path)
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(tracking.experiment_name(SUITE.name))
    children = {r.data.tags["row"]: r for r in tracking.child_runs(c, exp.experiment_id)}
    assert set(children) == {"baseline", "second seed"}
    return c, summary, children


def test_constants_are_mlflows():
    assert run_tags.RUN_NAME_TAG == mlflow_tags.MLFLOW_RUN_NAME
    assert run_tags.NOTE_TAG == mlflow_tags.MLFLOW_RUN_NOTE
    assert run_tags.SOURCE_NAME_TAG == mlflow_tags.MLFLOW_SOURCE_NAME
    assert run_tags.SOURCE_TYPE_TAG == mlflow_tags.MLFLOW_SOURCE_TYPE
    assert run_tags.GIT_COMMIT_TAG == mlflow_tags.MLFLOW_GIT_COMMIT
    assert run_tags.USER_TAG == mlflow_tags.MLFLOW_USER
    assert run_inputs.DATASET_CONTEXT_TAG == mlflow_tags.MLFLOW_DATASET_CONTEXT
    assert tracking.PARENT_TAG == mlflow_tags.MLFLOW_PARENT_RUN_ID
    from mlflow.entities import SourceType

    assert SourceType.from_string(run_tags.SOURCE_TYPE) == SourceType.LOCAL


def test_new_experiment_is_marked_model_training(suite_run):
    c, _, _ = suite_run
    exp = c.get_experiment_by_name(tracking.experiment_name(SUITE.name))
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.parametrize("before", [None, "genai_development_inferred", "genai_development"])
def test_experiment_made_before_is_marked_when_a_suite_runs_into_it(uri, tmp_path, before, monkeypatch):
    """An experiment made by an older harness (no kind), or one the UI stored a GenAI kind for."""
    monkeypatch.chdir(tmp_path)  # such an experiment keeps its files in MLflow's default, ./mlruns
    c = tracking.client(uri)
    exp_id = c.create_experiment(tracking.experiment_name(SUITE.name))
    if before is not None:
        c.set_experiment_tag(exp_id, "mlflow.experimentKind", before)
    assert c.get_experiment(exp_id).tags.get("mlflow.experimentKind") == before
    run(uri, tmp_path, only="baseline")
    assert c.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_kind_chosen_in_the_ui_is_kept(uri):
    c = tracking.client(uri)
    exp_id = c.create_experiment("shapeprop-bench/chosen", tags={"mlflow.experimentKind": "finetuning"})
    assert tracking.ensure_experiment(c, "shapeprop-bench/chosen") == exp_id
    assert c.get_experiment(exp_id).tags["mlflow.experimentKind"] == "finetuning"


def check_system_tags(tags: dict[str, str]) -> None:
    environment = run_tags.environment_tags()
    assert tags["mlflow.source.git.commit"] == environment["git_commit"] == tags["git_commit"]
    assert len(tags["mlflow.source.git.commit"]) == 40
    assert tags["mlflow.source.type"] == "LOCAL"
    # the UI's Source column shows what follows the last '/': the whole command, here
    assert tags["mlflow.source.name"] == "shapeprop-bench run ui-meta --profile mini"
    assert tags["mlflow.user"] and tags["mlflow.user"] == run_tags.user()


def test_child_runs_carry_system_tags_and_a_description(suite_run):
    _, _, children = suite_run
    for row, seed in (("baseline", 0), ("second seed", 1)):
        run = children[row]
        tags = run.data.tags
        check_system_tags(tags)
        spec = {s.row: s for s in expand(SUITE, "mini")}[row]
        assert run.info.run_name == tags["mlflow.runName"] == f"{row} | seed {seed} | {spec.key[:8]}"
        note = tags["mlflow.note.content"]
        assert "\n" not in note
        assert note.startswith(f"Row {row!r}, seed {seed} (mask_rcnn)"), note  # the UI shows the start
        for part in ("suite ui-meta", "table4", "profile mini", spec.key):
            assert part in note, (part, note)
        assert run.info.user_id == tags["mlflow.user"]


def test_parent_run_has_a_name_a_description_and_system_tags(suite_run):
    c, summary, children = suite_run
    parent = c.get_run(summary.parent_run_id)
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parent.info.run_id}
    tags = parent.data.tags
    check_system_tags(tags)
    name = parent.info.run_name
    assert name == tags["mlflow.runName"] and name.startswith("ui-meta [mini] 20"), name
    assert "invocation" not in name
    note = tags["mlflow.note.content"]
    assert "\n" not in note
    assert note.startswith("Suite ui-meta, profile mini"), note
    for part in ("2 run(s) to do", "inline"):
        assert part in note, (part, note)
    assert tags["command"] == shlex.join(sys.argv)  # here: pytest's command line
    assert tags["command"] in note


def test_command_line_names_the_cli_as_typed():
    argv = ["/x/.venv/bin/shapeprop-bench", "run", "suites/my suite.yaml", "--profile", "mini"]
    assert tracking.command_line(argv) == "shapeprop-bench run 'suites/my suite.yaml' --profile mini"


def test_child_runs_log_training_and_test_sets_as_datasets(suite_run):
    _, _, children = suite_run
    for run in children.values():
        inputs = run.inputs.dataset_inputs
        by_context = {}
        for dataset_input in inputs:
            (context,) = [t.value for t in dataset_input.tags if t.key == "mlflow.data.context"]
            by_context[context] = dataset_input.dataset
        assert set(by_context) == {"training", "evaluation"} and len(inputs) == 2
        train, test = by_context["training"], by_context["evaluation"]
        assert (train.name, test.name) == ("synthetic/train", "synthetic/val")
        assert (train.digest, test.digest) == (TRAIN_PRINT[:12], TEST_PRINT[:12])
        assert json.loads(train.profile)["fingerprint"] == TRAIN_PRINT == run.data.tags["dataset_fingerprint"]
        assert json.loads(test.profile)["fingerprint"] == TEST_PRINT
        assert json.loads(test.profile)["max_images"] == 3
        assert json.loads(train.profile)["masks"] == {"kind": "all"}
        # no root: the synthetic generator's options say where the data comes from
        assert train.source_type == "code"
        assert json.loads(train.source) == {
            "dataset": "synthetic",
            "options": {"num_images": 4, "image_size": 64},
        }


def test_dataset_source_is_the_data_root(tmp_path):
    (spec,) = [s for s in expand(SUITE, "mini", {"data.root": str(tmp_path)}) if s.row == "baseline"]
    (train,) = run_inputs.run_datasets(spec.config, TRAIN_PRINT, "")  # no test fingerprint: left out
    assert train.dataset.source_type == "local"
    assert json.loads(train.dataset.source) == {"uri": str(tmp_path)}


def load_table(uri, monkeypatch, artifact_file, run_id, **kwargs):
    """`mlflow.load_table` of one run; it reads the fluent API's store and experiment (even when
    called on a client), so they are `uri` and the run's experiment for the call."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", tracking.client(uri).get_run(run_id).info.experiment_id)
    return mlflow.load_table(artifact_file, run_ids=[run_id], **kwargs)


def test_result_tables_are_mlflow_tables_beside_the_csvs(suite_run, uri, monkeypatch):
    c, _, children = suite_run
    run_id = children["baseline"].info.run_id
    for name, table in (("best_overlap", BEST_OVERLAP), ("gt_box_masks", GT_BOX_MASKS)):
        loaded = load_table(uri, monkeypatch, f"tables/{name}.json", run_id, extra_columns=["run_id"])
        pd.testing.assert_frame_equal(loaded.drop(columns="run_id"), table)
        assert set(loaded["run_id"]) == {run_id}
        assert f"{name}.csv" in {a.path for a in c.list_artifacts(run_id)}  # the report reads these
    logged = json.loads(children["baseline"].data.tags["mlflow.loggedArtifacts"])
    assert {"path": "tables/best_overlap.json", "type": "table"} in logged


def test_a_resumed_run_logs_its_tables_and_datasets_once(uri, tmp_path, monkeypatch):
    """A run that failed after logging its tables resumes into the same MLflow run: the tables are
    replaced (log_table alone would append), the datasets are not doubled."""
    summary = run(uri, tmp_path, only="baseline")
    c = tracking.client(uri)
    (child,) = [r for r in tracking.search_runs(c, [c.get_run(summary.parent_run_id).info.experiment_id])
                if r.data.tags["kind"] == "run"]  # fmt: skip
    run_id = child.info.run_id
    c.update_run(run_id, status="FAILED")  # as if the end of the first attempt had failed
    again = run(uri, tmp_path, only="baseline")
    assert [o.run_id for o in again.done] == [run_id]  # resumed, not a new run
    loaded = load_table(uri, monkeypatch, "tables/gt_box_masks.json", run_id)
    pd.testing.assert_frame_equal(loaded, GT_BOX_MASKS)
    assert len(c.get_run(run_id).inputs.dataset_inputs) == 2


def log_datasets_at_once(uri, run_ids, config):
    """Log the same datasets into each run, from one thread per run released together: the errors."""
    import threading

    start, errors = threading.Barrier(len(run_ids)), []

    def log(run_id):
        start.wait()
        try:
            run_inputs.log_datasets(tracking.client(uri), run_id, config, TRAIN_PRINT, TEST_PRINT)
        except Exception as err:  # noqa: BLE001 - collected for the caller's assertion
            errors.append(err)

    threads = [threading.Thread(target=log, args=(run_id,)) for run_id in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_runs_logging_the_same_new_dataset_at_once_all_log_it(tmp_path):
    """Workers starting together log the same new dataset: MLflow's store looks it up and then
    inserts it, so all but one break its unique key (CI saw it with two workers). Each run still
    gets both sets. Eight threads per round race reliably (1-4 losers per round before the fix)."""
    (spec,) = [s for s in expand(SUITE, "mini", {}) if s.row == "baseline"]
    for round_ in range(3):
        uri = f"sqlite:///{tmp_path}/race{round_}.db"
        experiment = tracking.ensure_experiment(tracking.client(uri), "race")
        run_ids = [tracking.client(uri).create_run(experiment).info.run_id for _ in range(8)]
        assert log_datasets_at_once(uri, run_ids, spec.config) == []
        for run_id in run_ids:
            logged = tracking.client(uri).get_run(run_id).inputs.dataset_inputs
            assert sorted(d.dataset.name for d in logged) == ["synthetic/train", "synthetic/val"]
