"""The `shapeprop-bench` console script run as a user runs it: a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def cli_exe() -> str:
    return shutil.which("shapeprop-bench") or str(Path(sys.executable).with_name("shapeprop-bench"))


def cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [cli_exe(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
