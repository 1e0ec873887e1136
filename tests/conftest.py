"""Shared fixtures and the skip rules for the `gpu` and `detectron2` markers.

Helpers that are not fixtures (data factories, MLflow stores, the CLI as a subprocess) are in
tests/helpers; test modules import those, never each other.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest


def pytest_configure(config):
    if (
        os.environ.get("SHAPEPROP_REQUIRE_DETECTRON2") == "1"
        and importlib.util.find_spec("detectron2") is None
    ):
        raise pytest.UsageError(
            "SHAPEPROP_REQUIRE_DETECTRON2=1 (make test) but detectron2 is not importable: "
            "run `python tools/install_detectron2.py`, which `make test` runs once per .venv"
        )


def pytest_collection_modifyitems(config, items):
    import torch

    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; torch.cuda.is_available() is False here")
    skip_d2 = pytest.mark.skip(reason="needs detectron2, which is not installed (build it from source)")
    has_gpu = torch.cuda.is_available()
    has_d2 = importlib.util.find_spec("detectron2") is not None
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)
        if "detectron2" in item.keywords and not has_d2:
            item.add_marker(skip_d2)


@pytest.fixture
def one_thread():
    """One intra-op thread for small-model tests: on a busy 2-core machine, two torch threads spin
    against other jobs and run about 5x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory) -> Path:
    """An empty SQLite store with MLflow's schema (creating one runs its migrations: seconds), made
    once per session; tests copy it (tests.helpers.mlflow_store), never write to it."""
    from harness import tracking

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    tracking.client(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="session")
def postgres():
    """A throw-away PostgreSQL server for the session (tests.helpers.postgres), with a database
    `mlflow_template` that holds MLflow's migrated schema: `postgres_store` copies it."""
    import subprocess
    import sys

    from tests.helpers.postgres import postgres_cluster

    with postgres_cluster() as cluster:
        uri = cluster.create_database("mlflow_template")
        # in a process of its own: the template must have no open connection when it is copied
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"from harness import tracking; tracking.client({uri!r}).search_experiments()",
            ],
            check=True,
        )
        yield cluster


@pytest.fixture
def postgres_store(postgres, request) -> str:
    """A new, empty MLflow store on the session's PostgreSQL server; its SQLAlchemy URI."""
    import re

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + f"_{id(request) % 10000}"
    return postgres.create_database(name, template="mlflow_template")
