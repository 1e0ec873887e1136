"""MLflow stores for tests: copies of the migrated empty SQLite store (the `migrated_db` fixture of
tests/conftest.py), and a free loopback port for a real `mlflow server`."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path


def fresh_store(migrated_db: Path, directory: Path) -> str:
    """A new, empty SQLite store in `directory` (a copy of the migrated template)."""
    shutil.copyfile(migrated_db, directory / "mlflow.db")
    return f"sqlite:///{directory}/mlflow.db"


def new_store(migrated_db: Path, directory: Path) -> str:
    """`fresh_store`, making `directory` first where it does not exist."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_db, directory / "mlflow.db")
    return f"sqlite:///{directory}/mlflow.db"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
