"""The worked example (issue 42): examples/shapeprop_example's plugin (a dataset it writes in COCO
format, a method, a detector) runs beside built-in rows through the real CLI, as a new user would
run it, and its rows reach `report --claims`; no file of the package is edited for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

REPO = ROOT
SUITE = REPO / "examples" / "shapeprop_example" / "suite.yaml"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("shapeprop-bench")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SHAPEPROP_PLUGINS")}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("example")
    uri = f"sqlite:///{root}/mlflow.db"
    out = cli(
        "run",
        str(SUITE),
        "--profile",
        "mini",
        "--tracking-uri",
        uri,
        "--runs-dir",
        str(root / "runs"),
        cwd=root,
    )
    return root, uri, out


def test_the_examples_suite_runs_its_plugins_rows_beside_the_built_in_ones(example_run):
    from harness import tracking

    root, uri, out = example_run
    assert out.returncode == 0, out.stdout + out.stderr
    c = tracking.client(uri)
    experiment = c.get_experiment_by_name(tracking.experiment_name("example"))
    runs = {r.data.tags["row"]: r for r in c.search_runs([experiment.experiment_id], "tags.kind = 'run'")}
    assert set(runs) == {
        "baseline",
        "baseline + ShapeProp",
        "baseline + ShapeProp, 4 propagation steps",
        "baseline with more positive RoIs",
    }
    assert all(r.info.status == "FINISHED" and "segm_AP" in r.data.metrics for r in runs.values())
    mine = runs["baseline + ShapeProp, 4 propagation steps"]
    assert mine.data.tags["plugins"].startswith("shapeprop_example@")
    assert mine.data.params["model.shapeprop.steps"] == "4"
    assert runs["baseline with more positive RoIs"].data.params["model.arch"] == "mask_rcnn_more_positives"
    assert mine.data.params["data.dataset"] == "blobs"
    assert (root / "blobs-data" / "n8-s0" / "train.json").is_file()  # written in COCO format by the plugin


def test_report_shows_the_examples_rows_in_its_table_and_claims(example_run):
    root, uri, out = example_run
    report = cli(
        "report", "--table", "4", "--claims", "--profile", "mini", "--suite", str(SUITE), "--tracking-uri", uri,
        "--out", str(root / "report"), "--no-log", cwd=root,
    )  # fmt: skip
    assert report.returncode == 0, report.stdout + report.stderr
    claims = (root / "report" / "claims.md").read_text()
    assert "4 propagation steps are as good as max(H, W)" in claims and "+ ShapeProp" in claims
    assert "baseline + ShapeProp, 4 propagation steps" in claims
    table = (root / "report" / "table4-mini.md").read_text()
    for row in (
        "baseline + ShapeProp, 4 propagation steps",
        "baseline with more positive RoIs",
        "More boxes",
    ):
        assert row in table  # the suite's own rows beside the paper's (More boxes: the paper's, not run)
