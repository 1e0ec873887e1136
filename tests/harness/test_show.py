"""`shapeprop-bench show` on a real SQLite MLflow store filled by two real tiny runs of the harness
(Mask R-CNN, and Mask R-CNN + ShapeProp whose checkpoint is uploaded as an artifact)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from harness import tracking
from harness.cli import main
from harness.runner import run_one
from harness.show import ShowError, pick_records
from harness.suite import expand, load_suite
from shapeprop.visualize import comparison_layout, detection_layout
from tests.helpers.show_suite import SUITE_NAME, SUITE_YAML

PANEL = 96


class Store:
    def __init__(self, directory: Path):
        self.dir = directory
        self.uri = f"sqlite:///{directory}/mlflow.db"
        self.runs_dir = directory / "runs"
        self.suite_path = directory / "suite.yaml"
        self.run_ids: dict[str, str] = {}

    def cli(self, *args: str, out: Path):
        common = ["--tracking-uri", self.uri, "--runs-dir", str(self.runs_dir), "--out", str(out)]
        return CliRunner().invoke(main, ["show", *args, *common, "--panel", str(PANEL)])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    """Two FINISHED runs: the baseline's checkpoint only in its work directory, ShapeProp's also in MLflow."""
    s = Store(tmp_path_factory.mktemp("show"))
    s.suite_path.write_text(SUITE_YAML.format(root=s.dir / "data"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(s.dir)  # MLflow puts the artifact root (./mlruns) in the working directory
        for spec in expand(load_suite(s.suite_path)):
            outcome = run_one(
                spec, s.uri, s.runs_dir, progress=False, log_checkpoint=spec.method == "shapeprop"
            )
            assert outcome.ok, outcome.error
            s.run_ids[spec.row] = outcome.run_id
    return s


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255


def _panels(pixels: np.ndarray, layout, row: int) -> list[np.ndarray]:
    boxes = (layout.panel_box(row, c) for c in range(layout.cols))
    return [pixels[y0:y1, x0:x1] for x0, y0, x1, y1 in boxes]


def _assert_distinct(panels: list[np.ndarray]) -> None:
    for p in panels:
        assert p.std() > 0.02, "blank panel"
    for i in range(len(panels)):
        for j in range(i + 1, len(panels)):
            assert np.abs(panels[i] - panels[j]).mean() > 0.005, f"panels {i} and {j} look the same"


def test_show_one_run_by_id(store, tmp_path):
    run_id = store.run_ids["baseline + ShapeProp"]
    result = store.cli(run_id, "--images", "2", "--detections", "2", "--min-score", "0", out=tmp_path)
    assert result.exit_code == 0, result.output
    assert "checkpoint from MLflow artifact checkpoints/last.ckpt" in result.output
    folder = tmp_path / "qualitative" / f"baseline-shapeprop-seed0-{run_id[:8]}"
    pngs = sorted(folder.glob("image-*.png"))
    assert len(pngs) == 2
    layout = detection_layout(2, with_maps=True, panel=PANEL)
    for png in pngs:
        pixels = _load(png)
        assert pixels.shape[1::-1] == layout.size
        for row in range(2):  # crop, saliency, shape activation, predicted mask, GT: all different
            _assert_distinct(_panels(pixels, layout, row))
    # Logged to the run: the same bytes under qualitative/<run>/ in MLflow.
    client = tracking.client(store.uri)
    logged = client.list_artifacts(run_id, f"qualitative/{folder.name}")
    assert sorted(Path(a.path).name for a in logged) == [p.name for p in pngs]
    got = Path(client.download_artifacts(run_id, f"qualitative/{folder.name}/{pngs[0].name}", str(tmp_path)))
    assert got.read_bytes() == pngs[0].read_bytes()

    # --image-id picks images by id (the seeded draw is tested on `pick_records`).
    one = store.cli(run_id, "--image-id", "3", "--no-log", out=tmp_path / "c")
    assert one.exit_code == 0, one.output
    assert [p.name for p in (tmp_path / "c" / "qualitative" / folder.name).glob("*.png")] == ["image-3.png"]


def test_show_two_runs_by_suite_row_and_seed(store, tmp_path):
    result = store.cli(
        "--suite",
        str(store.suite_path),
        "--row",
        "baseline",
        "--row",
        "baseline + ShapeProp",
        "--seed",
        "0",
        "--images",
        "2",
        "--min-score",
        "0",
        out=tmp_path,
    )
    assert result.exit_code == 0, result.output
    base_id, sp_id = store.run_ids["baseline"], store.run_ids["baseline + ShapeProp"]
    assert (
        f"run {base_id} (baseline" in result.output and f"run {sp_id} (baseline + ShapeProp" in result.output
    )
    assert str(store.runs_dir / SUITE_NAME) in result.output  # the baseline's checkpoint is local

    # The baseline has no ShapeProp maps: crop, predicted mask, GT.
    baseline_pngs = sorted((tmp_path / "qualitative" / f"baseline-seed0-{base_id[:8]}").glob("*.png"))
    assert len(baseline_pngs) == 2
    layout = detection_layout(3, with_maps=False, panel=PANEL)
    pixels = _load(baseline_pngs[0])
    assert pixels.shape[1::-1] == layout.size
    _assert_distinct(_panels(pixels, layout, 0))

    compare = list((tmp_path / "qualitative").glob("compare-*.png"))
    assert len(compare) == 1
    assert f"Side by side: {compare[0]}" in result.output  # the line `make demo` ends with
    pixels = _load(compare[0])
    layout = comparison_layout(2, 2)
    assert pixels.shape[1::-1] == layout.size
    for row in range(2):  # GT, baseline masks, ShapeProp masks
        _assert_distinct(_panels(pixels, layout, row))
    client = tracking.client(store.uri)
    for run_id in (base_id, sp_id):
        names = [Path(a.path).name for a in client.list_artifacts(run_id, "qualitative")]
        assert compare[0].name in names


def test_unknown_run_and_run_without_checkpoint(store, tmp_path):
    result = store.cli("0123456789abcdef0123456789abcdef", out=tmp_path)
    assert result.exit_code != 0
    assert "no MLflow run with id '0123456789abcdef0123456789abcdef'" in result.output

    # A real run of the suite whose work directory (and so its checkpoint) is gone.
    client = tracking.client(store.uri)
    base = client.get_run(store.run_ids["baseline"])
    tags = {k: v for k, v in base.data.tags.items() if k in ("kind", "suite", "row", "seed", "profile")}
    run = client.create_run(base.info.experiment_id, tags={**tags, "run_key": "0000deadbeef0000"})
    config = store.runs_dir / SUITE_NAME / base.data.tags["run_key"] / "config.yaml"
    client.log_artifact(run.info.run_id, str(config))
    client.set_terminated(run.info.run_id)
    result = store.cli(run.info.run_id, out=tmp_path)
    assert result.exit_code != 0
    assert f"run {run.info.run_id} has no checkpoint" in result.output
    assert (
        str(store.runs_dir / SUITE_NAME / "0000deadbeef0000" / "checkpoints" / "last.ckpt") in result.output
    )

    # Runs of a suite that has no such row: the error lists its rows.
    result = store.cli("--suite", SUITE_NAME, "--row", "nope", "--seed", "0", out=tmp_path)
    assert result.exit_code != 0 and "has no row 'nope'" in result.output and "'baseline'" in result.output
    # The parent run of an invocation is not a run of a spec.
    parent = tracking.start_invocation(store.uri, SUITE_NAME, {})
    result = store.cli(parent, out=tmp_path)
    assert result.exit_code != 0 and "parent run" in result.output
    assert not (tmp_path / "qualitative").exists()


def test_pick_records_is_seeded_and_takes_ids():
    records = [{"image_id": i} for i in range(1, 21)]
    first = pick_records(records, 5, 0, ())
    assert first == pick_records(records, 5, 0, ()) != pick_records(records, 5, 1, ())
    assert [r["image_id"] for r in first] == sorted(r["image_id"] for r in first)
    assert len(pick_records(records, 50, 0, ())) == 20
    assert [r["image_id"] for r in pick_records(records, 5, 0, ("7", "2"))] == [7, 2]
    with pytest.raises(ShowError, match="image id.* 99 not in"):
        pick_records(records, 5, 0, ("7", "99"))


def test_missing_store(tmp_path):
    result = CliRunner().invoke(
        main, ["show", "abc", "--tracking-uri", f"sqlite:///{tmp_path}/none.db", "--out", str(tmp_path)]
    )
    assert result.exit_code != 0 and "no MLflow store" in result.output
    assert not (tmp_path / "none.db").exists()
