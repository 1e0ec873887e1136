"""MLflow stores for tests: copies of the migrated empty SQLite store (the `migrated_db` fixture of
tests/conftest.py), a free loopback port for a real server, and waiting until one answers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def fresh_store(migrated_db: Path, directory: Path) -> str:
    """A new, empty SQLite store in `directory` (made if missing; a copy of the migrated template)."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_db, directory / "mlflow.db")
    return f"sqlite:///{directory}/mlflow.db"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    """Whether `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until_answering(
    url: str, process: subprocess.Popen, log: Path | None = None, timeout_s: float = 180
) -> None:
    """Wait until the server `process` started answers `url` with 200; fail (with its log) if it
    exits first or takes longer than `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            text = log.read_text() if log is not None and log.is_file() else ""
            raise AssertionError(f"no server answered {url}:\n{text}")
        time.sleep(0.5)
