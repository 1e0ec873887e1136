"""The console of a `run`: the suite's bars and one line per run; the libraries' banners and
warnings go to each run's log file, and to the console only with --verbose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "tests" / "suites" / "tiny.yaml"
# what Lightning, MLflow and deprecation warnings print when left alone
BANNERS = ("GPU available", "TPU available", "Tip:", "LeafSpec", "Creating initial MLflow", "Warning")


def _run(tmp_path: Path, *extra: str) -> tuple[str, Path]:
    runs = tmp_path / "runs"
    command = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        str(SUITE),
        "--profile",
        "mini",
        "--only",
        "baseline",
    ]
    command += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--runs-dir", str(runs), *extra]
    env = {**os.environ, "COLUMNS": "200", "PYTHONWARNINGS": "default"}  # warnings on, as for a user
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr, next(runs.rglob("run.log"))


def test_a_run_shows_no_library_banner_and_logs_them_to_its_file(tmp_path):
    console, log = _run(tmp_path)
    assert "done baseline" in console and "done 1, skipped 0, failed 0" in console
    shown = [line for line in console.splitlines() if any(b in line for b in BANNERS)]
    assert shown == []
    logged = log.read_text()
    assert "GPU available" in logged  # Lightning's banner, kept in the run's log
    assert "py.warnings" in logged  # and the deprecation warnings: so they were emitted, not lost
