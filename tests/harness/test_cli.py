"""The CLI's entry points, called as a user would: through the installed console script."""

import shutil
import subprocess
import sys

import pytest

import shapeprop


def run_cli(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("shapeprop-bench") or sys.executable.replace("python", "shapeprop-bench")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def test_version_matches_package():
    out = run_cli("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"shapeprop-bench, version {shapeprop.__version__}"


def test_env_reports_every_component():
    out = run_cli("env")
    assert out.returncode == 0, out.stderr
    keys = [line.split("  ")[0].strip() for line in out.stdout.splitlines()]
    for key in (
        "python",
        "torch",
        "torchvision",
        "cuda runtime",
        "gpu",
        "mlflow",
        "detectron2",
        "propagation operator",
    ):
        assert key in keys, out.stdout
    import torch

    assert "torch" in out.stdout and torch.__version__ in out.stdout
    # detectron2 is found by its import name, whatever its distribution is called
    detectron2 = pytest.importorskip("detectron2", reason="detectron2 is not installed here")

    (line,) = [line for line in out.stdout.splitlines() if line.startswith("detectron2")]
    assert "not installed" not in line and detectron2.__version__ in line, line


def test_help_lists_commands():
    out = run_cli("--help")
    assert out.returncode == 0
    assert "env" in out.stdout
