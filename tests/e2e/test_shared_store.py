"""The shared store as clusters run it: many workers writing to one `mlflow server` on a real
PostgreSQL (artifacts served by the server, no shared file system), and that server with MLflow's
basic authentication (nobody let in without credentials; no credential written anywhere).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from harness import tracking
from tests.helpers import TEST_SUITES
from tests.helpers.cli import cli_exe
from tests.helpers.mlflow_store import TrackingServer

SUITE = TEST_SUITES / "tiny.yaml"
SUITE_NAME = "test-tiny"


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    }
    return subprocess.run(
        [cli_exe(), *args],
        cwd=cwd,
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )


def runs_of(c, suite: str) -> list:
    exp = c.get_experiment_by_name(tracking.experiment_name(suite))
    return [] if exp is None else tracking.child_runs(c, exp.experiment_id)


def all_text(folder: Path) -> str:
    """Every file under `folder` as text, archives (zip, tar) opened."""
    parts = []
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        parts.append(path.read_bytes().decode("utf-8", "replace"))
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                parts += [z.read(n).decode("utf-8", "replace") for n in z.namelist()]
        elif tarfile.is_tarfile(path):
            with tarfile.open(path) as t:
                parts += [t.extractfile(m).read().decode("utf-8", "replace") for m in t if m.isfile()]
    return "\n".join(parts)


@pytest.mark.store
@pytest.mark.slow  # about 100 s: a server with authentication and a real run
def test_basic_auth_lets_in_only_workers_with_credentials_and_writes_none(postgres_store, tmp_path):
    password = "pw-" + secrets.token_hex(8)
    auth = {
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,  # the admin's password at the first start
    }
    args = ["run", str(SUITE), "--only", "baseline", "--runs-dir", str(tmp_path / "runs")]
    with TrackingServer(
        tmp_path / "server", postgres_store, ("--app-name", "basic-auth"), env=auth
    ) as server:
        refused = run_cli(*args, "--tracking-uri", server.url, cwd=tmp_path)
        out = refused.stdout + refused.stderr
        assert refused.returncode != 0, out
        assert f"the tracking server {server.url} refused" in out, out
        assert "MLFLOW_TRACKING_USERNAME" in out and "MLFLOW_TRACKING_PASSWORD" in out
        assert "Traceback" not in out
        assert not (tmp_path / "runs").exists()  # nothing started

        credentials = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}
        ran = run_cli(*args, "--tracking-uri", server.url, "--log-every", "1", cwd=tmp_path, env=credentials)
        assert ran.returncode == 0 and "done 1, skipped 0, failed 0" in ran.stdout, ran.stdout + ran.stderr
        archive = tmp_path / "export.zip"
        exported = run_cli(
            "archive",
            "export",
            "--out",
            str(archive),
            "--tracking-uri",
            server.url,
            cwd=tmp_path,
            env=credentials,
        )
        assert exported.returncode == 0, exported.stdout + exported.stderr

        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = "admin", password
        try:
            c = tracking.client(server.url)
            (run,) = runs_of(c, SUITE_NAME)
            (parent,) = [
                r
                for r in tracking.search_runs(c, [run.info.experiment_id])
                if r.data.tags["kind"] == "invocation"
            ]
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
    assert run.info.status == "FINISHED"
    for logged in (run, parent):  # no credential in params or tags (the command line, the environment)
        assert password not in repr(logged.data.params) + repr(logged.data.tags)
    stored = (
        all_text(tmp_path / "runs") + all_text(tmp_path / "server" / "artifacts") + all_text(archive.parent)
    )
    assert "evaluation" in stored and password not in stored  # logs, artifacts, the archive
    assert password not in ran.stdout + ran.stderr


@pytest.mark.store
@pytest.mark.slow  # about 4 minutes on 2 busy cores: 8 training processes at once
def test_eight_workers_against_a_postgresql_server_lose_nothing(postgres_store, tmp_path):
    """8 runs at once (local executor, 8 worker processes), each logging every step's metrics, its
    checkpoint tags and its artifacts through the server: all FINISHED, every step there."""
    steps, rows = 8, [f"seed {i}" for i in range(8)]
    tiny = yaml.safe_load(SUITE.read_text())
    suite = tmp_path / "load.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "name": "test-load",
                "reproduces": tiny["reproduces"],
                "base": tiny["base"],
                "rows": [
                    {"label": row, "method": "mask_rcnn", "overrides": {"seed": i}}
                    for i, row in enumerate(rows)
                ],
            }
        )
    )
    with TrackingServer(tmp_path / "server", postgres_store) as server:
        started = time.monotonic()
        out = run_cli(
            "run", str(suite), "--executor", "local", "--workers", "8", "--log-every", "1",
            "--tracking-uri", server.url, "--runs-dir", str(tmp_path / "runs"),
            "--set", f"schedule.max_steps={steps}", "--set", "schedule.checkpoint_every=2", cwd=tmp_path,
        )  # fmt: skip
        seconds = time.monotonic() - started
        assert out.returncode == 0 and "done 8, skipped 0, failed 0" in out.stdout, out.stdout + out.stderr
        c = tracking.client(server.url)
        runs = runs_of(c, "test-load")
        assert sorted(r.data.tags["row"] for r in runs) == sorted(rows)
        assert [r.info.status for r in runs] == ["FINISHED"] * 8
        histories = {
            (r.data.tags["row"], name): sorted(m.step for m in c.get_metric_history(r.info.run_id, name))
            for r in runs
            for name in ("loss", "lr")
        }
        assert sum(len(h) for h in histories.values()) == 8 * 2 * steps
        assert all(h == list(range(1, steps + 1)) for h in histories.values())  # no step missing or twice
        assert [r.data.tags["last_checkpoint_step"] for r in runs] == [str(steps)] * 8
        artifacts = [{a.path for a in c.list_artifacts(r.info.run_id)} for r in runs]
        assert all({"config.yaml", "evaluation.json", "run.log"} <= a for a in artifacts)
    print(f"8 runs of {steps} steps at once against PostgreSQL: {seconds:.0f} s")
