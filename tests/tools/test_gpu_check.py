"""`make gpu-check` must not rot where no GPU is: its CPU-side parts run here, as a real command."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def test_gpu_check_cpu_side_writes_every_section(tmp_path):
    report = tmp_path / "check.md"
    out = subprocess.run(
        [
            sys.executable,
            "tools/gpu_check.py",
            "--no-gpu",
            "--quick",
            "--out",
            str(report),
            "--data",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = report.read_text()
    assert (
        text.count("| torch |") == 1 and "| device | CPU only" in text
    )  # the table, refreshed after the build
    for title in ("1. Operator build", "2. GPU tests"):
        assert f"## {title}\n\nSkipped: no GPU" in text
    assert "| cpu | 16 |" in text  # the operator benchmark's row
    assert text.count("| 32 | ") == 2  # Mask R-CNN and RetinaMask rows of the detector benchmark
    assert "syncing operators" in text and "n/a (CPU)" in text
    assert "| baseline | 2 |" in text and "| baseline + ShapeProp | 2 |" in text
    assert "| channels_last True |" in text and "GFLOP/s" in text and "| `bf16-mixed` |" in text  # speed
    assert "| mask_rcnn | `bf16-mixed`, saliency learner in it |" in text  # model.shapeprop.saliency_autocast
    assert "largest gap to 32" in text
    assert "Every section ran." in text
    assert "[gpu-check" in out.stdout and "5. Demo rows end to end: done" in out.stdout


def test_gpu_check_refuses_to_run_without_a_gpu_unless_told(tmp_path):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the check would run")
    out = subprocess.run(
        [sys.executable, "tools/gpu_check.py", "--out", str(tmp_path / "x.md")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "--no-gpu" in out.stderr
    assert not (tmp_path / "x.md").exists()
