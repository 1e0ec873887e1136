"""tools/shared_trainings.py: the runs of suite files that share a training key."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from shared_trainings import groups  # noqa: E402

BASE = """
base:
  data: {dataset: synthetic, options: {num_images: 4, image_size: 64}, min_size: 64, max_size: 64}
  model: {backbone: tiny}
  schedule: {max_steps: 4}
"""


def test_runs_that_differ_only_in_evaluation_share_a_training(tmp_path):
    one = tmp_path / "one.yaml"
    one.write_text(
        "name: one\n"
        + BASE
        + "rows:\n"
        + "  - {label: all, method: mask_rcnn}\n"
        + "  - {label: few images, method: mask_rcnn, overrides: {eval: {max_images: 2}}}\n"
        + "  - {label: longer, method: mask_rcnn, overrides: {schedule: {max_steps: 8}}}\n"
    )
    two = tmp_path / "two.yaml"
    two.write_text("name: two\n" + BASE + "rows:\n  - {label: same, method: mask_rcnn}\n")
    total, shared = groups([one, two], "full")
    assert total == 4
    assert shared == [[("one", "all", 0), ("one", "few images", 0), ("two", "same", 0)]]
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "shared_trainings.py"), str(one), str(two)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert out.splitlines()[-1] == "full: 4 runs in 2 suites, 2 trainings (2 shared)"
