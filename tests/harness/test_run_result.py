"""A run's results cross from the library to the harness once: the library writes its files, the
harness uploads them as they are and writes none of them again."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from harness import runner, tracking
from harness.suite import expand, load_suite
from shapeprop.contract import ExperimentResult
from shapeprop.files import write_atomic
from tests.helpers import TEST_SUITES

TINY = TEST_SUITES / "tiny.yaml"


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    tracking.client(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def uri(tmp_path, migrated_db, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts a new experiment's artifacts in ./mlruns
    shutil.copyfile(migrated_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


def baseline(profile: str = "mini"):
    return next(s for s in expand(load_suite(TINY), profile) if s.row == "baseline")


def stamps(paths) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of each file: an atomic rewrite changes the inode, an in-place one the mtime."""
    return {Path(p).name: (Path(p).stat().st_ino, Path(p).stat().st_mtime_ns) for p in paths}


def downloaded(uri: str, run_id: str, name: str, tmp_path: Path) -> str:
    return Path(tracking.client(uri).download_artifacts(run_id, name, str(tmp_path))).read_text()


def test_tables_a_stand_in_wrote_are_uploaded_as_written(uri, tmp_path):
    written = {}

    def experiment(cfg, workdir, callbacks, progress, **_):
        callbacks.on_start(1, 0)
        tables = {
            "gt_box_masks": write_atomic(workdir / "gt_box_masks.csv", "image_id,iou\n1,0.5\n"),
            "coco_matches": write_atomic(workdir / "coco_matches.csv", "image_id,score\n1,0.9\n"),
        }
        evaluation = write_atomic(workdir / "evaluation.json", '{"metrics": {}}')
        written.update(stamps([*tables.values(), evaluation]))
        return ExperimentResult({"segm_AP": 1.0}, tables, {"evaluation": evaluation}, "f" * 64, {}, "e" * 64)

    outcome = runner.run_one(baseline(), uri, tmp_path / "runs", experiment_fn=experiment, progress=False)
    assert outcome.ok, outcome.error
    workdir = tmp_path / "runs" / "test-tiny" / outcome.key
    assert stamps(workdir / name for name in written) == written  # none written again
    assert downloaded(uri, outcome.run_id, "gt_box_masks.csv", tmp_path / "a") == "image_id,iou\n1,0.5\n"
    assert downloaded(uri, outcome.run_id, "evaluation.json", tmp_path / "b") == '{"metrics": {}}'
    artifacts = {a.path for a in tracking.client(uri).list_artifacts(outcome.run_id, "tables")}
    assert artifacts == {"tables/gt_box_masks.json"}  # the per-detection table gets no UI table


@pytest.mark.usefixtures("one_thread")
def test_a_real_runs_csv_tables_are_written_once(uri, tmp_path, monkeypatch):
    """The real experiment on a tiny synthetic config: each CSV table is written once, by the library."""
    import shapeprop.experiment as experiment

    writes: list[str] = []
    real_write = experiment.write_atomic

    def counting_write(path, data):
        writes.append(Path(path).name)
        return real_write(path, data)

    monkeypatch.setattr(experiment, "write_atomic", counting_write)
    handed = {}

    def run(cfg, workdir, callbacks, progress, **kwargs):
        result = experiment.run_experiment(cfg, workdir, callbacks, progress, **kwargs)
        handed.update(stamps(result.tables.values()))
        return result

    outcome = runner.run_one(baseline(), uri, tmp_path / "runs", experiment_fn=run, progress=False)
    assert outcome.ok, outcome.error
    csv_files = sorted(name for name in writes if name.endswith(".csv"))
    assert csv_files == sorted(handed) == ["coco_gt.csv", "coco_matches.csv", "gt_box_masks.csv"]
    workdir = tmp_path / "runs" / "test-tiny" / outcome.key
    assert stamps(workdir / name for name in handed) == handed  # the harness rewrote none
    uploaded = {a.path for a in tracking.client(uri).list_artifacts(outcome.run_id)}
    assert set(handed) <= uploaded


def test_the_runner_reads_the_result_by_its_type():
    """No `getattr(result, ...)`: the runner reads an `ExperimentResult`'s fields."""
    tree = ast.parse((Path(runner.__file__)).read_text())
    duck_typed = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "hasattr")
        and node.args
        and isinstance(node.args[0], ast.Name)
        and node.args[0].id == "result"
    ]
    assert duck_typed == []
