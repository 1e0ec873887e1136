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


class TrackingServer:
    """A real `mlflow server` on loopback over `backend_uri` (SQLite or PostgreSQL), serving the
    artifacts itself (`--serve-artifacts`, stored in `folder/artifacts`: workers need no shared file
    system); `stop()` and `start()` again on the same port restart it. Use it as a context manager:
    always stopped after. `extra_args`/`env`: e.g. `--app-name basic-auth` and its secret key."""

    def __init__(self, folder: Path, backend_uri: str, extra_args: tuple[str, ...] = (), env=None):
        self.folder, self.backend_uri, self.extra_args, self.env = folder, backend_uri, extra_args, env
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> TrackingServer:
        import os
        import sys

        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_uri,
                 "--serve-artifacts", "--artifacts-destination", str(self.folder / "artifacts"),
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1", *self.extra_args],
                cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **(self.env or {})},
            )  # fmt: skip
        wait_until_answering(self.url + "/health", self.process, self.log)
        return self

    def stop(self) -> None:
        """Stop the server and its workers (its process group), at once."""
        import os
        import signal

        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def __enter__(self) -> TrackingServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
