"""tools/seed_spread.py on a small archive written here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from seed_spread import spread  # noqa: E402


def write_archive(path: Path) -> Path:
    runs = [
        ("table1", "a | ShapeProp", 0, 40.0, 38.0),
        ("table1", "a | ShapeProp", 1, 20.0, 38.0),
        ("table1", "a | ShapeProp", 2, 30.0, 38.0),
        ("table1", "a | Oracle", 0, 41.0, 37.0),
        ("table1", "a | Oracle", 1, 43.0, 39.0),
        ("ablations", "a | ShapeProp", 0, 1.0, 1.0),  # another suite: left out
    ]
    lines = [
        json.dumps(
            {
                "suite": suite,
                "tags": {"row": row, "seed": str(seed)},
                "metrics": {"segm_AP": segm, "bbox_AP": bbox, "gtbox_mask_iou": segm + 30, "loss_mil": 0.5},
            }
        )
        for suite, row, seed, segm, bbox in runs
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_spread_separates_mask_from_detection_variance(tmp_path):
    table, std = spread(write_archive(tmp_path / "runs.jsonl"), "table1", ["ShapeProp", "Oracle"])
    assert len(table) == 5 and list(table[table.row == "a | ShapeProp"].seed) == [0, 1, 2]
    assert std.loc["a | ShapeProp", "mask AP"] == pytest.approx(10.0)  # 40, 20, 30
    assert std.loc["a | ShapeProp", "box AP"] == 0.0
    assert std.loc["a | Oracle", "box AP"] == pytest.approx(2**0.5)
    assert std.loc["a | ShapeProp", "loss_mil"] == 0.0


def test_cli_names_the_archive_when_nothing_matches(tmp_path):
    archive = write_archive(tmp_path / "runs.jsonl")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "seed_spread.py"),
            str(archive),
            "--suite",
            "table1",
            "--row",
            "GrabCut",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and f"{archive}: no finished run of suite 'table1'" in done.stderr
