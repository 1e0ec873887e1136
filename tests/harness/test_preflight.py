"""Preflight: a `run` whose data, weights or output folders are missing starts nothing, records
nothing in MLflow, and names every problem with its path and fix in one message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.preflight import PreflightError, data_problems, preflight
from harness.runner import RunOptions, run_suite
from harness.suite import expand, load_suite

SUITE = """
name: preflight
reproduces: table4
base:
  data: {{dataset: coco_2017, root: {root}, min_size: 64, max_size: 64, num_workers: 0}}
  model: {{backbone: tiny, weights: {weights}}}
  schedule: {{max_steps: 2, batch_size: 2}}
rows:
  - {{label: baseline, method: mask_rcnn}}
  - {{label: baseline + ShapeProp, method: shapeprop}}
profiles:
  mini:
    datasets: {{coco_2017: synthetic}}
    overrides: {{model.weights: null, data.options: {{num_images: 4, image_size: 64}}}}
"""


def _suite(tmp_path: Path, root: Path | None, weights: str | None = None) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(root=json.dumps(str(root)) if root else "null", weights=json.dumps(weights)))
    return path


def _coco_root(tmp_path: Path, with_annotations: bool = True) -> Path:
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / f"{split}2017").mkdir()
        if with_annotations:
            (root / "annotations" / f"instances_{split}2017.json").write_text('{"images": []}')
    return root


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["run", *args])
    return result.exit_code, result.output


def _nothing_recorded(tmp_path: Path) -> bool:
    """No MLflow store was made, and no work directory."""
    return not (tmp_path / "mlflow.db").exists() and not any((tmp_path / "runs").rglob("mlflow.json"))


def _store_args(tmp_path: Path) -> list[str]:
    return ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--runs-dir", str(tmp_path / "runs")]


def test_no_dataset_root_names_the_dataset_and_the_fixes(tmp_path, monkeypatch):
    monkeypatch.delenv("SHAPEPROP_DATA", raising=False)
    code, out = _run(str(_suite(tmp_path, None)), *_store_args(tmp_path))
    assert code == 1
    assert "nothing was run or recorded in MLflow" in out
    assert "data coco_2017: dataset 'coco_2017' needs a root directory" in out
    assert "$SHAPEPROP_DATA" in out and "shapeprop-bench data verify coco_2017" in out
    assert "--profile mini" in out
    assert out.count("needs a root directory") == 1  # one problem per dataset, not per split or run
    assert _nothing_recorded(tmp_path)


def test_missing_annotation_files_are_listed_with_their_paths(tmp_path):
    root = _coco_root(tmp_path, with_annotations=False)
    code, out = _run(str(_suite(tmp_path, root)), *_store_args(tmp_path))
    assert code == 1
    for split in ("train", "val"):
        path = root / "annotations" / f"instances_{split}2017.json"
        assert f"annotation file {path}: does not exist" in out
        assert f"shapeprop-bench data verify coco_2017 --root {root} --split {split}" in out
    assert "image folder" not in out  # the folders exist
    assert _nothing_recorded(tmp_path)


def test_missing_weights_file(tmp_path):
    root = _coco_root(tmp_path)
    weights = tmp_path / "weights" / "r50.pth"
    code, out = _run(str(_suite(tmp_path, root, str(weights))), *_store_args(tmp_path))
    assert code == 1
    assert f"model.weights {weights}: does not exist" in out
    assert "annotation file" not in out  # the data is there
    assert _nothing_recorded(tmp_path)


def test_output_folder_not_writable(tmp_path):
    root = _coco_root(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    runs_dir = blocker / "runs"  # under a file: cannot be made
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, out = _run(str(_suite(tmp_path, root)), "--tracking-uri", uri, "--runs-dir", str(runs_dir))
    assert code == 1
    assert f"the runs' work directories {runs_dir}: cannot write there" in out
    assert "--runs-dir" in out
    assert not (tmp_path / "mlflow.db").exists()


def test_every_problem_in_one_message(tmp_path, monkeypatch):
    monkeypatch.delenv("SHAPEPROP_DATA", raising=False)
    suite = load_suite(_suite(tmp_path, None, str(tmp_path / "missing.pt")))
    with pytest.raises(PreflightError) as caught:
        preflight(expand(suite, "full"), tmp_path / "a-file" / "runs", "sqlite:///x.db", "full")
    wheres = [p.where for p in caught.value.problems]
    assert wheres[0] == "data coco_2017"
    assert any(w.startswith("model.weights") for w in wheres)
    assert len(wheres) == 2  # the output folder can be made


def test_the_mini_profile_passes_and_a_good_root_passes(tmp_path):
    suite = load_suite(_suite(tmp_path, _coco_root(tmp_path)))
    preflight(
        expand(suite, "mini"), tmp_path / "runs", f"sqlite:///{tmp_path / 'm.db'}"
    )  # synthetic: generated
    assert data_problems(expand(suite, "full")) == []


def test_run_suite_checks_before_recording_and_submitting(tmp_path, monkeypatch):
    """The library entry point too (and so the Slurm executor): no executor is made."""
    monkeypatch.delenv("SHAPEPROP_DATA", raising=False)
    import harness.runner

    def no_executor(*args, **kwargs):
        raise AssertionError("an executor was made before the preflight")

    monkeypatch.setattr(harness.runner, "make_executor", no_executor)
    suite = load_suite(_suite(tmp_path, None))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(PreflightError):
        run_suite(suite, RunOptions(tracking_uri=uri, runs_root=tmp_path / "runs", executor="slurm"))
    assert _nothing_recorded(tmp_path)
