"""Fixtures of the harness tests."""

from __future__ import annotations

import pytest

from tests.helpers.mlflow_store import fresh_store


@pytest.fixture
def uri(tmp_path, migrated_db, monkeypatch):
    """A new, empty SQLite store in `tmp_path`, the working directory (MLflow puts a new
    experiment's artifacts in ./mlruns). A test module may define its own `uri` instead."""
    monkeypatch.chdir(tmp_path)
    return fresh_store(migrated_db, tmp_path)
