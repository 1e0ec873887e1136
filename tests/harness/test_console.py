"""The console of a `run`: the suite's bars and one line per run; the libraries' banners and
warnings go to each run's log file, and to the console only with --verbose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

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


def test_the_display_keeps_a_bar_per_run_in_progress():
    """Runs side by side (the local executor) each get a bar, found by run key; an ended run's bar
    goes, its line is printed, and a late step of it is ignored."""
    import io

    from rich.console import Console

    from harness.console import SuiteProgress

    console = Console(file=io.StringIO(), width=200)
    with SuiteProgress(console, "suite", total_runs=0) as display:
        display.start(total_runs=2)
        display.run_started("k1", "row a", 10, 0)
        display.run_started("k2", "row b", 10, 4)
        display.step("k1", 5, 0.5)
        display.step("k2", 6, None)
        bars = {t.description.strip(): t.completed for t in display.progress.tasks}
        assert bars == {"suite": 0, "row a": 5, "row b (resumed at 4)": 6}
        display.run_ended("k1", "done row a")
        display.step("k1", 9, 0.1)
        bars = {t.description.strip(): t.completed for t in display.progress.tasks}
        assert bars == {"suite": 1, "row b (resumed at 4)": 6}
    assert "done row a" in console.file.getvalue()
