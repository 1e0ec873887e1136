"""Faults survived: a real `mlflow server` on a real PostgreSQL (artifacts served by the server)
stopped and started again, and a runs folder out of space.

Covered: the server stopped for 60 s in the middle of a run (training goes on, everything logged
meanwhile arrives once it is back, no gap in the history); a server that never comes back (the run
fails after SHAPEPROP_TRACKING_WAIT with a message naming the store and the kept checkpoints); the
server restarted between two runs of a suite (the suite goes on); the runs folder out of space (the
run fails naming it; the finished run's files stay byte for byte). Checkpoints killed mid-write or
truncated: tests/shapeprop/engine/test_train.py.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import tracking
from tests.helpers import TEST_SUITES
from tests.helpers.cli import cli, cli_exe
from tests.helpers.mlflow_store import TrackingServer, fresh_store

SUITE = TEST_SUITES / "tiny.yaml"
SUITE_NAME = "test-tiny"
STEPS = 24


def start_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen(
        [cli_exe(), *args], cwd=cwd, env={**environ, **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def run_args(url: str, tmp_path: Path, *only: str) -> list[str]:
    selected = [a for row in only for a in ("--only", row)]
    return [
        "run", str(SUITE), *selected, "--tracking-uri", url, "--runs-dir", str(tmp_path / "runs"),
        "--log-every", "1", "--set", f"schedule.max_steps={STEPS}", "--set", "schedule.checkpoint_every=4",
    ]  # fmt: skip


def child_runs_of(c) -> list:
    exp = c.get_experiment_by_name(tracking.experiment_name(SUITE_NAME))
    return [] if exp is None else tracking.child_runs(c, exp.experiment_id)


def child_runs(url: str) -> dict[str, object]:
    return {r.data.tags["row"]: r for r in child_runs_of(tracking.client(url))}


def logged_steps(url: str, run_id: str, metric: str = "loss") -> list[int]:
    return sorted(m.step for m in tracking.client(url).get_metric_history(run_id, metric))


def wait_for(condition, what: str, process: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            out = process.stdout.read() if process.poll() is not None else ""
            raise AssertionError(f"never: {what}\n{out}")
        time.sleep(0.5)


def trained_steps(tmp_path: Path) -> int:
    """The last step the run's log (run.log) reports as trained."""
    steps = [
        int(s)
        for log in (tmp_path / "runs").rglob("run.log")
        for s in re.findall(r"step (\d+)/", log.read_text())
    ]
    return max(steps, default=0)


def test_server_down_for_60_s_mid_run_loses_nothing(postgres_store, tmp_path):
    with TrackingServer(tmp_path / "server", postgres_store) as server:
        process = start_cli(*run_args(server.url, tmp_path, "baseline"), cwd=tmp_path)
        try:
            wait_for(
                lambda: child_runs(server.url) and trained_steps(tmp_path) >= 2, "step 2 trained", process
            )
            server.stop()
            stopped_at = trained_steps(tmp_path)
            time.sleep(60)
            during = trained_steps(tmp_path)
            server.start()
            out, _ = process.communicate(timeout=600)
        finally:
            process.kill()
        assert process.returncode == 0, out
        assert "done 1, skipped 0, failed 0" in out
        # training went on while the server was down (it did not wait for the store)
        assert during >= stopped_at + 4, (stopped_at, during)
        (run,) = child_runs(server.url).values()
        assert run.info.status == "FINISHED"
        for name in ("loss", "lr", "loss_mask"):  # every step once, none missing, none twice
            assert logged_steps(server.url, run.info.run_id, name) == list(range(1, STEPS + 1)), name
        assert run.data.tags["last_checkpoint_step"] == str(STEPS)
        c = tracking.client(server.url)
        assert {"config.yaml", "evaluation.json", "run.log"} <= {
            a.path for a in c.list_artifacts(run.info.run_id)
        }
        assert list((tmp_path / "server" / "artifacts").rglob("evaluation.json"))  # stored by the server


@pytest.mark.store
@pytest.mark.slow  # about 40 s, beside the 60 s outage test in the default run
def test_server_that_never_comes_back_fails_the_run_after_the_bounded_wait(postgres_store, tmp_path):
    with TrackingServer(tmp_path / "server", postgres_store) as server:
        process = start_cli(
            *run_args(server.url, tmp_path, "baseline"), cwd=tmp_path, env={"SHAPEPROP_TRACKING_WAIT": "5"}
        )
        try:  # the server goes after the first checkpoint, which must be kept
            wait_for(lambda: list((tmp_path / "runs").rglob("last.ckpt")), "a first checkpoint", process)
            server.stop()
            started = time.monotonic()
            out, _ = process.communicate(timeout=300)
        finally:
            process.kill()
    assert process.returncode != 0, out
    assert f"the tracking store {server.url} did not answer" in out, out
    assert "SHAPEPROP_TRACKING_WAIT" in out
    (workdir,) = (tmp_path / "runs" / SUITE_NAME).iterdir()
    assert str(workdir / "checkpoints") in out
    assert (workdir / "checkpoints" / "last.ckpt").is_file()  # kept, to resume from
    assert time.monotonic() - started < 240  # bounded: not MLflow's minutes of retries per call


@pytest.mark.store
@pytest.mark.slow  # about 2 minutes: two runs and a server restart
def test_server_restarted_between_two_runs_the_suite_goes_on(postgres_store, tmp_path):
    with TrackingServer(tmp_path / "server", postgres_store) as server:
        process = start_cli(*run_args(server.url, tmp_path, "baseline", "second seed"), cwd=tmp_path)
        try:
            wait_for(
                lambda: any(r.info.status == "FINISHED" for r in child_runs(server.url).values()),
                "the first run finished",
                process,
            )
            server.stop()
            server.start()
            out, _ = process.communicate(timeout=600)
        finally:
            process.kill()
        assert process.returncode == 0, out
        assert "done 2, skipped 0, failed 0" in out
        runs = child_runs(server.url)
        assert set(runs) == {"baseline", "second seed"}
        for run in runs.values():
            assert run.info.status == "FINISHED"
            assert logged_steps(server.url, run.info.run_id) == list(range(1, STEPS + 1))


def limit_file_size(max_bytes: int):
    """A child's `preexec_fn`: no file it writes may grow past `max_bytes` (a full disk without a
    small file system to mount); SIGXFSZ ignored, so a write past it fails with EFBIG."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return limit


def test_runs_folder_out_of_space_fails_the_run_naming_it_and_damages_nothing(tmp_path, migrated_db):
    uri = fresh_store(migrated_db, tmp_path / "store")
    runs = tmp_path / "runs"
    args = ["run", str(SUITE), "--tracking-uri", uri, "--runs-dir", str(runs)]
    first = cli(*args, "--only", "baseline", cwd=tmp_path)
    assert first.returncode == 0 and "done 1, skipped 0, failed 0" in first.stdout, (
        first.stdout + first.stderr
    )
    before = {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()}
    assert any(p.name == "last.ckpt" for p in before) and any(p.name == "evaluation.json" for p in before)

    # a checkpoint is about 15 MB: the first one of the next run does not fit
    full = subprocess.run(
        [cli_exe(), *args, "--only", "second seed"], cwd=tmp_path, capture_output=True, text=True,
        preexec_fn=limit_file_size(8_000_000), timeout=600,
    )  # fmt: skip
    out = full.stdout + full.stderr
    assert full.returncode != 0 and "failed 1" in full.stdout, out
    assert f"no space left to write in the runs folder {runs}" in out, out
    assert "File too large" in out
    assert before == {p: p.read_bytes() for p in before}  # the finished run's files, byte for byte
    (failed,) = [p for p in runs.joinpath(SUITE_NAME).iterdir() if not (p / "evaluation.json").exists()]
    assert not list(failed.rglob("*.ckpt*")) and not list(failed.rglob(".*.tmp"))  # nothing half-written
    c = tracking.client(uri)
    (run,) = [r for r in child_runs_of(c) if r.data.tags["row"] == "second seed"]
    assert run.info.status == "FAILED" and "no space left" in run.data.tags["error"]
