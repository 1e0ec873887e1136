"""A COCO-format dataset of one's own, named in a suite's `datasets:` section (issue 42): expansion,
preflight, `data verify` / `data stats`, and a real run that trains and evaluates on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import tracking
from harness.cli import main
from harness.preflight import data_problems
from harness.suite import SuiteError, expand, load_suite
from shapeprop.data import catalog, source
from shapeprop.data.records import hash_files
from tests.helpers.cli import cli
from tests.helpers.data_factories import write_coco
from tests.helpers.mlflow_store import fresh_store

SUITE = """\
name: my-data
datasets:
  my_coco:
    files:
      train: {annotations: data/annotations/instances_train2017.json, images: data/train2017}
      val: {annotations: data/annotations/instances_val2017.json, images: data/val2017}
    class_groups: {seen: [person, car], unseen: [dog, giraffe]}
base:
  data:
    dataset: my_coco
    masks: {kind: categories, classes: seen}
    min_size: 64
    max_size: 64
    num_workers: 0
  model: {backbone: tiny}
  schedule: {max_steps: 2, batch_size: 2, checkpoint_every: 2, warmup_steps: 1, milestones: []}
  eval: {categories: unseen, timing: false}
rows:
  - {label: baseline, method: mask_rcnn}
profiles:
  mini:
    datasets: {my_coco: synthetic}
    overrides: {data.options: {num_images: 4, image_size: 64}}
"""


@pytest.fixture
def suite_dir(tmp_path: Path) -> Path:
    for split in ("train", "val"):
        write_coco(tmp_path / "data", split)
    (tmp_path / "my.yaml").write_text(SUITE)
    return tmp_path


def test_expansion_writes_the_files_into_each_run_relative_to_the_suite(suite_dir):
    (run,) = expand(load_suite(suite_dir / "my.yaml"))
    data = run.config.data
    assert data.dataset == "my_coco" and data.class_groups == {
        "seen": ["person", "car"],
        "unseen": ["dog", "giraffe"],
    }
    assert data.files["val"].annotations == str(suite_dir / "data/annotations/instances_val2017.json")
    assert data.files["train"].images == str(suite_dir / "data/train2017")
    (mini,) = expand(load_suite(suite_dir / "my.yaml"), "mini")  # a stand-in drops the files
    assert mini.config.data.dataset == "synthetic" and mini.config.data.files is None
    assert mini.config.data.class_groups is None
    # the classes a head is built for come from the file, without loading it
    assert source.data_class_names(data) == ["person", "car", "dog", "giraffe"]


def test_loaded_like_a_built_in_with_its_groups_and_fingerprint(suite_dir):
    (run,) = expand(load_suite(suite_dir / "my.yaml"))
    val = source.load_data(run.config.data, "val")
    assert len(val) == 2 and val.metadata.class_groups["unseen"] == ["dog", "giraffe"]
    assert val.metadata.fingerprint == hash_files([suite_dir / "data/annotations/instances_val2017.json"])


def test_a_misspelt_own_dataset_is_located_with_a_suggestion(suite_dir):
    (suite_dir / "my.yaml").write_text(SUITE.replace("dataset: my_coco", "dataset: my_cocoo"))
    with pytest.raises(SuiteError) as err:
        load_suite(suite_dir / "my.yaml")
    line = SUITE.splitlines().index("    dataset: my_coco") + 1
    assert f"my.yaml:{line}" in str(err.value) and "did you mean 'my_coco'?" in str(err.value)


def test_a_group_member_that_is_no_category_names_the_file(suite_dir):
    (suite_dir / "my.yaml").write_text(SUITE.replace("[dog, giraffe]", "[dog, zebra]"))
    (run,) = expand(load_suite(suite_dir / "my.yaml"))
    with pytest.raises(catalog.DataError, match="instances_train2017.json: data.class_groups: .*'zebra'"):
        source.load_data(run.config.data, "train")


def test_preflight_names_a_missing_annotation_file_and_the_key_to_fix(suite_dir):
    (suite_dir / "data/annotations/instances_val2017.json").unlink()
    problems = data_problems(expand(load_suite(suite_dir / "my.yaml")))
    assert len(problems) == 1
    text = str(problems[0])
    assert "instances_val2017.json" in text and "does not exist" in text and "data.files.val" in text


def test_data_verify_and_stats_read_the_suites_dataset(suite_dir):
    runner = CliRunner()
    suite = str(suite_dir / "my.yaml")
    verify = runner.invoke(main, ["data", "verify", "my_coco", "--suite", suite])
    assert verify.exit_code == 0, verify.output
    assert "my_coco train: 2 images, 5 annotations: ok" in verify.output
    assert "my_coco val: 2 images, 5 annotations: ok" in verify.output
    stats = runner.invoke(
        main,
        [
            "data",
            "stats",
            "my_coco",
            "--suite",
            suite,
            "--masks",
            "categories",
            "--classes",
            "seen",
            "--json",
        ],
    )
    assert stats.exit_code == 0, stats.output
    out = json.loads(stats.output)
    # person (2 boxes, one crowd) and car keep their masks; dog and giraffe are boxes only
    assert out["per_class"]["dog"]["masks"] == 0 and out["per_class"]["car"]["masks"] == 1
    (suite_dir / "data/val2017/000000000009.jpg").unlink()
    broken = runner.invoke(main, ["data", "verify", "my_coco", "--suite", suite, "--split", "val"])
    assert broken.exit_code == 1 and "000000000009.jpg" in broken.output


def test_a_run_trains_and_evaluates_on_it_through_the_cli(suite_dir, migrated_db):
    uri = fresh_store(migrated_db, suite_dir)
    out = cli(
        "run",
        str(suite_dir / "my.yaml"),
        "--tracking-uri",
        uri,
        "--runs-dir",
        str(suite_dir / "runs"),
        cwd=suite_dir,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    c = tracking.client(uri)
    experiment = c.get_experiment_by_name(tracking.experiment_name("my-data"))
    (run,) = c.search_runs([experiment.experiment_id], filter_string="tags.kind = 'run'")
    assert run.info.status == "FINISHED"
    assert "segm_AP" in run.data.metrics and "bbox_AP" in run.data.metrics
    assert run.data.tags["dataset_fingerprint"] != ""
    sources = {json.loads(d.dataset.source)["uri"] for d in run.inputs.dataset_inputs}
    assert sources == {str(suite_dir / f"data/annotations/instances_{s}2017.json") for s in ("train", "val")}
