"""tools/learning_curve.py: points on the test split, appended as they end; a rerun resumes."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT


def _curve(tmp_path: Path) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        str(ROOT / "tools" / "learning_curve.py"),
        str(ROOT / "tests" / "suites" / "tiny.yaml"),
    ]
    args += ["--only", "baseline", "--profile", "full", "--steps", "4", "--every", "2", "--threads", "1"]
    args += ["--out", str(tmp_path / "curves"), "--name", "tiny", "--workdir", str(tmp_path / "work")]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)


@pytest.mark.slow  # 35 s: two trainings and three evaluations through the tool
def test_learning_curve_points_resume_and_are_on_the_test_split(tmp_path):
    done = _curve(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "curves" / "tiny.csv").open()))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(0 <= float(r["bbox_AP"]) <= 100 and 0 <= float(r["gtbox_mask_iou"]) <= 100 for r in rows)
    assert (tmp_path / "curves" / "tiny.png").stat().st_size > 0
    evaluation = (tmp_path / "work" / "evaluation.json").read_text()
    assert '"test_split": "test"' in evaluation and '"step": 4' in evaluation  # never val
    again = _curve(tmp_path)  # every point is there: nothing trains, no line is added
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(list(csv.DictReader((tmp_path / "curves" / "tiny.csv").open()))) == 2


def test_plateau_step_is_the_first_point_near_the_late_mean():
    sys.path.insert(0, str(ROOT / "tools"))
    from learning_curve import plateau_step

    aps = [5, 10, 15, 17.5, 17, 21, 19, 20, 21, 20, 19, 21, 20, 19]  # last 6: mean 20; 90 %: 18
    rows = [{"step": str(300 * (i + 1)), "bbox_AP": str(ap)} for i, ap in enumerate(aps)]
    assert plateau_step(rows) == 1800  # 17.5 at 1200 is just short; 21 at 1800 the first in reach
    assert plateau_step(rows, within=0.15) == 1200  # 17 >= 0.85 * 20
    assert plateau_step(list(reversed(rows))) == 1800  # sorted by step, not file order
    assert plateau_step(rows[:11]) is None  # fewer than two late parts: no plateau to read


def test_config_of_selects_one_run_by_seed_and_axis_values():
    sys.path.insert(0, str(ROOT / "tools"))
    from learning_curve import config_of

    suite = str(ROOT / "suites" / "fractions.yaml")  # rows x seeds x data_fraction in (0.01, 0.02, 0.1)
    cfg = config_of(suite, "Mask R-CNN w/ ShapeProp", "mini", 1, [], ["data.data_fraction=0.01"])
    assert (cfg["seed"], cfg["data"]["data_fraction"], cfg["data"]["test_split"]) == (1, 0.01, "test")
    assert cfg["model"]["shapeprop"] is not None and cfg["schedule"]["milestones"] == []
    with pytest.raises(
        SystemExit, match="must select exactly one run.*data_fraction=0.02.*data_fraction=0.1"
    ):
        config_of(suite, "Mask R-CNN w/ ShapeProp", "mini", 1, [])  # three fractions match
    with pytest.raises(SystemExit, match="got none"):
        config_of(suite, "Mask R-CNN w/ ShapeProp", "mini", 1, [], ["data.data_fraction=0.5"])
