"""A finished run's model as an MLflow Model, on a real SQLite store filled by a real tiny run
(Mask R-CNN + ShapeProp, 2 steps, made by the `run` CLI with `--register-model`): loaded with
MLflow's own `mlflow.pyfunc.load_model` it finds what the run's evaluation found; `predict` writes
COCO results and overlays; `mlflow models serve` answers a posted image with its instances."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools.coco import COCO

from harness import tracking
from harness.cli import main
from harness.show import evaluation_records
from harness.stored_runs import load_config
from shapeprop import serving
from shapeprop.visualize import overlay_layout
from tests.helpers import ROOT
from tests.helpers.mlflow_store import free_port, fresh_store, wait_until_answering
from tests.helpers.show_suite import SUITE_NAME, SUITE_YAML

ROW = "baseline + ShapeProp"
REGISTERED = "shapeprop-mini"


class Store:
    def __init__(self, directory: Path, uri: str):
        self.dir, self.uri = directory, uri
        self.runs_dir = directory / "runs"
        self.suite_path = directory / "suite.yaml"
        self.run_id = ""

    def records(self) -> tuple[list[dict], list[str]]:
        """The run's evaluation records and class names (as `show` reads them)."""
        c = tracking.client(self.uri)
        cfg = load_config(c, c.get_run(self.run_id), self.runs_dir, self.dir / "scratch")
        return evaluation_records(cfg)

    def evaluated(self) -> list[dict]:
        """The detections the run's evaluation saved (its `outputs/detections.json` artifact)."""
        path = tracking.client(self.uri).download_artifacts(
            self.run_id, "outputs/detections.json", str(self.dir)
        )
        return json.loads(Path(path).read_text())


@pytest.fixture(scope="module")
def store(tmp_path_factory, migrated_db) -> Store:
    directory = tmp_path_factory.mktemp("serving")
    s = Store(directory, fresh_store(migrated_db, directory))
    s.suite_path.write_text(SUITE_YAML.format(root=directory / "data"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(directory)  # MLflow puts the artifact root (./mlruns) in the working directory
        common = ["--tracking-uri", s.uri, "--runs-dir", str(s.runs_dir)]
        result = CliRunner().invoke(
            main, ["run", str(s.suite_path), "--only", ROW, *common, "--register-model", REGISTERED]
        )
    assert result.exit_code == 0, result.output
    (run,) = tracking.client(s.uri).search_runs(
        [tracking.client(s.uri).get_experiment_by_name(tracking.experiment_name(SUITE_NAME)).experiment_id],
        filter_string="tags.kind = 'run'",
    )
    s.run_id = run.info.run_id
    return s


@pytest.fixture
def fluent_uri(store, monkeypatch):
    """MLflow's fluent API (`mlflow.pyfunc.load_model`) pointed at the test store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)


def _png_bytes(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame({"image": [Path(r["file_name"]).read_bytes() for r in records]})


def test_logged_model_finds_what_the_evaluation_found(store, fluent_uri, one_thread):
    model = mlflow.pyfunc.load_model(f"runs:/{store.run_id}/model")
    assert model.metadata.get_input_schema().input_names() == ["image"]
    assert model.metadata.get_output_schema().input_names() == list(serving.INSTANCE_COLUMNS)
    records, classes = store.records()
    instances = model.predict(_png_bytes(records))

    assert list(instances.columns) == list(serving.INSTANCE_COLUMNS)
    assert len(instances) > 0, "the run's model found nothing: nothing to compare"
    assert set(instances["category"]) <= set(classes)
    got = serving.coco_results(instances, [r["image_id"] for r in records])
    want = store.evaluated()
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g["image_id"], g["category_id"], g["segmentation"]) == (
            w["image_id"],
            w["category_id"],
            w["segmentation"],
        )
        assert g["score"] == pytest.approx(w["score"], abs=1e-5)
        assert g["bbox"] == pytest.approx(w["bbox"], abs=1e-3)

    # min_score leaves out the instances below it
    top = model.predict(_png_bytes(records), params={"min_score": float(np.median(instances["score"]))})
    assert 0 < len(top) < len(instances) and top["score"].min() >= np.median(instances["score"])

    # registered by `run --register-model`
    (version,) = tracking.client(store.uri).search_model_versions(f"name = '{REGISTERED}'")
    assert version.run_id == store.run_id
    registered = mlflow.pyfunc.load_model(f"models:/{REGISTERED}/{version.version}")
    assert registered.predict(_png_bytes(records[:1])).equals(instances[instances["image"] == 0])


def _image_folder(records: list[dict], folder: Path) -> Path:
    """The images of `records` copied into `folder`, beside a file that is not an image."""
    folder.mkdir()
    for r in records:
        shutil.copy(r["file_name"], folder / Path(r["file_name"]).name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _predict(store: Store, *args: str):
    return CliRunner().invoke(main, ["predict", *args, "--tracking-uri", store.uri])


def test_predict_cli_on_a_folder_writes_coco_results(store, tmp_path, one_thread):
    records, classes = store.records()
    photos = _image_folder(records[:3], tmp_path / "photos")
    out = tmp_path / "out"
    result = _predict(
        store,
        str(photos),
        "--suite",
        str(store.suite_path),
        "--row",
        ROW,
        "--out",
        str(out),
        "--min-score",
        "0",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert f"runs:/{store.run_id}/model" in result.output

    # valid COCO results against the written image list; ids 1..3 in file name order
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(out / "images.json"))
        dt = gt.loadRes(str(out / "results.json"))
    assert [gt.imgs[i]["file_name"] for i in (1, 2, 3)] == sorted(
        Path(r["file_name"]).name for r in records[:3]
    )
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == classes
    # the same instances as the run's evaluation on those images
    by_name = {Path(r["file_name"]).name: r["image_id"] for r in records}
    evaluated = [
        {**d, "image_id": i}
        for i in (1, 2, 3)
        for d in store.evaluated()
        if d["image_id"] == by_name[gt.imgs[i]["file_name"]]
    ]
    got = [dt.anns[a] for a in sorted(dt.anns)]
    assert len(got) == len(evaluated) > 0
    for g, w in zip(got, evaluated, strict=True):
        assert (g["image_id"], g["category_id"], g["segmentation"]) == (
            w["image_id"],
            w["category_id"],
            w["segmentation"],
        )
        assert g["score"] == pytest.approx(w["score"], abs=1e-5)

    overlays = sorted((out / "overlays").glob("*.png"))
    assert [p.name for p in overlays] == sorted(
        f"{Path(n).stem}-{i}.png" for i, n in ((i, gt.imgs[i]["file_name"]) for i in (1, 2, 3))
    )
    size = Image.open(overlays[0]).size
    assert size == overlay_layout(64, 64).size
    assert np.asarray(Image.open(overlays[0]).convert("RGB")).std() > 10  # drawn, not blank


def test_predict_cli_on_a_coco_file_uses_its_ids(store, tmp_path, one_thread):
    data = store.dir / "data"
    coco_file = data / "annotations" / "instances_val.json"
    out = tmp_path / "out"
    result = _predict(
        store,
        "--coco",
        str(coco_file),
        "--image-dir",
        str(data / "val"),
        "--run-id",
        store.run_id,
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco_file))
        dt = gt.loadRes(str(out / "results.json"))
    assert not (out / "images.json").exists()
    # the file's category ids, by name
    names = {c["id"]: c["name"] for c in gt.loadCats(gt.getCatIds())}
    _, classes = store.records()
    evaluated = store.evaluated()
    got = [
        a
        for a in (dt.anns[k] for k in sorted(dt.anns))
        if a["image_id"] in {d["image_id"] for d in evaluated}
    ]
    assert [(g["image_id"], names[g["category_id"]]) for g in got] == [
        (d["image_id"], classes[d["category_id"]]) for d in evaluated
    ]
    assert len(list((out / "overlays").glob("*.png"))) == len(gt.imgs)


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def test_predict_cli_names_what_is_wrong(store, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other-model"  # an MLflow Model, not a run's
    mlflow.pyfunc.save_model(str(other), python_model=_Echo(), pip_requirements=[])
    cases = [
        ((str(empty), "--run-id", store.run_id), f"{empty}: no image files"),
        ((str(tmp_path / "nope"), "--run-id", store.run_id), "no such folder (the IMAGES argument)"),
        ((str(empty),), "name the model once"),
        ((str(empty), "--run-id", "x", "--model-uri", "runs:/x/model"), "(got --run-id and --model-uri)"),
        (("--coco", str(tmp_path / "a.json"), "--run-id", store.run_id), "--coco needs --image-dir"),
        (
            ("--coco", str(tmp_path / "a.json"), "--image-dir", str(tmp_path), "--run-id", store.run_id),
            f"{tmp_path / 'a.json'}: annotation file not found",
        ),
        ((str(store.dir / "data" / "val"), "--run-id", "0" * 32), "no MLflow run with id"),
        (
            (str(store.dir / "data" / "val"), "--model-uri", "models:/no-such-model/1"),
            "--model-uri models:/no-such-model/1: cannot use it",
        ),
        (
            (str(store.dir / "data" / "val"), "--model-uri", str(other)),
            "is an MLflow Model, but not the model of a shapeprop-bench run",
        ),
    ]
    for args, message in cases:
        result = _predict(store, *args, "--out", str(tmp_path / "out"))
        assert result.exit_code != 0, args
        assert message in result.output, (args, result.output)


def test_mlflow_models_serve_answers_a_posted_image(store, tmp_path, fluent_uri):
    """`mlflow models serve` (MLflow's own server, in this environment) on the run's model: a PNG
    posted as base64 in the documented JSON comes back as its instances."""
    records, _ = store.records()
    png = Path(records[0]["file_name"]).read_bytes()
    port = free_port()
    # the server execs `uvicorn` by name: this Python's scripts first on PATH; the code under
    # test importable (PYTHONPATH) as the model's class is unpickled there
    repo = str(ROOT)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": store.uri,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p),
    }
    log = tmp_path / "serve.log"
    with open(log, "w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{store.run_id}/model",
             "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port)],
            cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(url + "/ping", server, log, timeout_s=120)
        payload = {
            "dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(png).decode("ascii")]]},
            "params": {"min_score": 0.1},
        }
        request = urllib.request.Request(
            url + "/invocations", json.dumps(payload).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            served = pd.DataFrame(
                json.loads(response.read())["predictions"], columns=list(serving.INSTANCE_COLUMNS)
            )
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn process
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    local = mlflow.pyfunc.load_model(f"runs:/{store.run_id}/model")
    want = local.predict(pd.DataFrame({"image": [png]}), params={"min_score": 0.1})
    assert len(served) == len(want) > 0
    assert served["category"].tolist() == want["category"].tolist()
    assert served["segmentation"].tolist() == want["segmentation"].tolist()
    assert np.allclose(
        served[["score", "x", "y", "width", "height"]], want[["score", "x", "y", "width", "height"]]
    )
