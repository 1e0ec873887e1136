"""tools/mini_targets.py (issue 41's targets) on an archive and a registered protocol written here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from mini_targets import covered_seconds, render, timing  # noqa: E402

REGISTERED = 1_800_000_000  # the protocol's commit time, seconds since the epoch
# mask AP per seed and box AP of each row (method tag): ShapeProp closes (34 - 22) / (40 - 22) = 67 %
ROWS = {
    "box_masks": ([12.0] * 5, 45.0),
    "grabcut": ([20.0, 21.0, 19.0, 20.0, 20.0], 45.0),
    "mask_rcnn": ([22.0, 21.0, 23.0, 22.0, 22.0], 48.0),
    "maskx": ([23.0] * 5, 48.0),
    "shapeprop": ([34.0, 33.0, 35.0, 34.0, 34.0], 47.0),
    "oracle": ([40.0, 41.0, 39.0, 40.0, 40.0], 29.0),  # box AP below 30: target 5 missed
}


def registered_protocol(folder: Path) -> Path:
    env = {
        **os.environ,
        "GIT_AUTHOR_DATE": f"@{REGISTERED} +0000",
        "GIT_COMMITTER_DATE": f"@{REGISTERED} +0000",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    protocol = folder / "PROTOCOL.md"
    protocol.write_text("# protocol\n")
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    subprocess.run(["git", "add", "PROTOCOL.md"], cwd=folder, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "register"], cwd=folder, check=True, env=env)
    return protocol


def archived(method: str, direction: str, seed: int, mask: float, box: float, start_s: int) -> str:
    """One finished run of 6000 steps at 0.1 s per step, 600 s from its start to its end."""
    return json.dumps(
        {
            "suite": "table1",
            "run_id": f"{method}{seed}",
            "start_time": start_s * 1000,
            "end_time": (start_s + 600) * 1000,
            "params": {
                "data.options": json.dumps({"image_size": 160, "version": 3}),
                "data.test_split": "val",
            },
            "tags": {
                "profile": "mini",
                "method": method,
                "row": f"R-50-FPN | {direction} | {method}",
                "mlflow.runName": f"{method} | {direction} | seed {seed}",
                "max_steps": "6000",
            },
            "metrics": {"segm_AP": mask, "bbox_AP": box, "train_s_per_step": 0.1},
        }
    )


def test_targets_are_read_from_the_archive_and_runs_before_the_registration_are_named(tmp_path):
    protocol = registered_protocol(tmp_path)
    lines = []
    for method, (masks, box) in ROWS.items():
        for seed, mask in enumerate(masks):
            lines.append(archived(method, "non-voc -> voc", seed, mask, box, REGISTERED + 60))
    # the other direction: ShapeProp with two seeds only, one started before the registration
    lines.append(archived("shapeprop", "voc -> non-voc", 0, 30.0, 40.0, REGISTERED - 60))
    lines.append(archived("shapeprop", "voc -> non-voc", 1, 20.0, 40.0, REGISTERED + 60))
    archive = tmp_path / "runs.jsonl"
    archive.write_text("\n".join(lines) + "\n")

    text = render(archive, protocol)
    nonvoc_to_voc, voc_to_nonvoc = text.split("## non-voc -> voc")[1].split("## voc -> non-voc")

    assert "**1 run(s) started before it**: shapeprop | voc -> non-voc | seed 0" in text
    assert "| ShapeProp | 34.0 ± 0.7 (n=5) | 47.0 |" in nonvoc_to_voc
    assert "| 1. GrabCut below ShapeProp | 20.0 vs 34.0 | met |" in nonvoc_to_voc
    assert "| 1. GrabCut >= 5 below the oracle | oracle - GrabCut = +20.0 | met |" in nonvoc_to_voc
    assert "| 2. baseline above the box-mask floor | 22.0 vs 12.0 | met |" in nonvoc_to_voc
    assert "| 2. Mask^X not below the baseline | 23.0 vs 22.0 | met |" in nonvoc_to_voc
    assert "| 3. ShapeProp closes 40-95 % of the baseline-to-oracle gap | 67% | met |" in nonvoc_to_voc
    assert "| 4. ShapeProp's seed std <= max(2 x oracle's, 2) | 0.71 vs 2.00 | met |" in nonvoc_to_voc
    assert "| 5. box AP >= 30 in every row | lowest: oracle 29.0 | **missed** |" in nonvoc_to_voc
    # too few seeds: pending, with the figures so far; targets whose rows are absent are not listed
    assert "| ShapeProp | 25.0 ± 7.1 (n=2) | 40.0 |" in voc_to_nonvoc
    assert "| 5. box AP >= 30 in every row | lowest: ShapeProp 40.0 | pending (so far met) |" in voc_to_nonvoc
    assert "3. ShapeProp closes" not in voc_to_nonvoc
    # 32 runs x 6000 steps x 0.1 s; all but one ran from +60 s to +660 s, one from -60 s to +540 s
    assert "| table1 | 32 | 19,200 s (5.3 h) | 720 s (0.2 h) |" in text


def test_a_run_that_started_from_another_s_training_adds_no_training_time():
    trained = json.loads(archived("oracle", "non-voc -> voc", 0, 40.0, 50.0, REGISTERED + 10))
    twin = json.loads(archived("oracle", "voc -> non-voc", 0, 38.0, 45.0, REGISTERED + 700))
    twin["tags"]["trained_by"] = "table1/0123456789abcdef"
    (line,) = [row for row in timing([trained, twin]) if row.startswith("| table1 ")]
    assert line == "| table1 | 2 | 600 s (0.2 h) | 1,200 s (0.3 h) |"  # 6000 steps x 0.1 s, once


def test_wall_time_counts_overlapping_runs_once():
    assert covered_seconds([(0, 600), (300, 900), (1000, 1600), (1100, 1200)]) == 1500
    assert covered_seconds([]) == 0


def test_an_unregistered_protocol_is_refused(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "PROTOCOL.md").write_text("# not committed\n")
    (tmp_path / "runs.jsonl").write_text("")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools/mini_targets.py"),
            "--archive",
            str(tmp_path / "runs.jsonl"),
            "--protocol",
            str(tmp_path / "PROTOCOL.md"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "PROTOCOL.md: not committed; register the protocol first" in result.stderr
