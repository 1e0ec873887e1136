"""Executors: the local pool isolates runs in worker processes and survives a worker dying.

The jobs here are small module-level functions (a worker process imports them by name); the
real experiment runs through these executors in tests/test_harness_e2e.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.executors import InlineExecutor, LocalExecutor, RunOutcome, make_executor
from harness.suite import expand, parse_suite

SUITE = parse_suite(
    "name: exec\nrows:\n"
    + "".join(f"  - {{label: r{i}, method: mask_rcnn, overrides: {{seed: {i}}}}}\n" for i in range(4)),
    "exec.yaml",
)


def report_process(spec) -> RunOutcome:
    """Says which process ran the spec and with which thread/GPU settings; row r2 dies by SIGKILL."""
    if spec.row == "r2":
        os.kill(os.getpid(), signal.SIGKILL)
    print(f"hello from {spec.row}")
    metrics = {"pid": float(os.getpid()), "threads": float(os.environ.get("OMP_NUM_THREADS", "-1"))}
    return RunOutcome(spec.key, spec.row, "FINISHED", run_id=f"run-{spec.row}", metrics=metrics)


def raise_error(spec) -> RunOutcome:
    raise RuntimeError(f"store unreachable for {spec.row}")


def log_path(spec, root: str) -> Path:
    return Path(root) / f"{spec.row}.log"


def test_local_pool_survives_a_killed_worker(tmp_path):
    import functools

    specs = expand(SUITE)
    executor = LocalExecutor(2, functools.partial(log_path, root=str(tmp_path)))
    outcomes = {o.row: o for o in executor.run(specs, report_process)}
    assert set(outcomes) == {"r0", "r1", "r2", "r3"}
    dead = outcomes["r2"]
    assert dead.crashed and dead.status == "FAILED" and "exit code -9" in dead.error
    finished = [outcomes[r] for r in ("r0", "r1", "r3")]
    assert all(o.ok and not o.crashed for o in finished)
    assert {o.metrics["pid"] for o in finished} - {float(os.getpid())} == {o.metrics["pid"] for o in finished}
    if executor.gpus == 0:  # the CPU is shared evenly between the workers
        assert {o.metrics["threads"] for o in finished} == {float(max(1, os.cpu_count() // 2))}
    for row in ("r0", "r1", "r3"):  # each run's stdout went to its own log
        assert (tmp_path / f"{row}.log").read_text().strip().endswith(f"hello from {row}")


def write_pid_and_sleep(spec) -> RunOutcome:
    Path(os.environ["PID_DIR"], spec.row).write_text(str(os.getpid()))
    time.sleep(300)
    return RunOutcome(spec.key, spec.row, "FINISHED")


def _alive(pid: int) -> bool:
    try:  # a zombie (dead, not yet reaped by init) counts as dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="workers die with their parent through Linux's prctl")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_local_workers_die_with_the_invoking_process(tmp_path, sig):
    """Killing `run` (not its process group) must not leave its workers training on."""
    script = textwrap.dedent(
        f"""
        import functools, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_harness_executors import SUITE, log_path, write_pid_and_sleep
        from harness.executors import LocalExecutor
        from harness.suite import expand
        executor = LocalExecutor(2, functools.partial(log_path, root={str(tmp_path)!r}))
        for _ in executor.run(expand(SUITE)[:2], write_pid_and_sleep):
            pass
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PID_DIR": str(tmp_path)})
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / row).exists() for row in ("r0", "r1")):
            assert parent.poll() is None and time.monotonic() < deadline, "the workers never started"
            time.sleep(0.2)
        workers = [int((tmp_path / row).read_text()) for row in ("r0", "r1")]
        assert all(_alive(pid) for pid in workers)
        parent.send_signal(sig)
        parent.wait(30)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in workers if _alive(pid)], "workers outlived the invoking process"
    finally:
        parent.kill()
        for row in ("r0", "r1"):
            if (tmp_path / row).exists() and _alive(pid := int((tmp_path / row).read_text())):
                os.kill(pid, signal.SIGKILL)


def test_inline_executor_turns_a_job_error_into_a_failed_outcome():
    outcomes = list(InlineExecutor().run(expand(SUITE)[:2], raise_error))
    assert [o.status for o in outcomes] == ["FAILED", "FAILED"]
    assert "store unreachable for r0" in outcomes[0].error


def test_make_executor_rejects_unknown_names_and_bad_worker_counts(tmp_path):
    with pytest.raises(ValueError, match="unknown executor 'cluster'"):
        make_executor("cluster", 1, tmp_path, "s", log_path=lambda s: tmp_path)
    with pytest.raises(ValueError, match="at least 1"):
        LocalExecutor(0, lambda s: tmp_path)


def die_after_a_checkpoint(cfg, workdir, callbacks, progress, **kwargs):
    """An experiment whose process is killed (like the OOM killer would) after step 1's checkpoint."""
    callbacks.on_start(cfg.schedule.max_steps, 0)
    callbacks.on_metrics({"loss": 1.5, "lr": 0.01}, 1)
    callbacks.on_checkpoint(Path(workdir) / "checkpoints" / "last.ckpt", 1)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_killed_mid_run_is_recorded_failed_and_the_suite_goes_on(tmp_path):
    from harness import tracking
    from harness.runner import run_suite

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    suite = parse_suite("name: crash\nrows:\n  - {label: doomed, method: mask_rcnn}\n", "crash.yaml")
    summary = run_suite(
        suite,
        tracking_uri=uri,
        runs_root=tmp_path / "runs",
        executor="local",
        workers=1,
        experiment_fn=die_after_a_checkpoint,
    )
    assert [o.row for o in summary.failed] == ["doomed"] and not summary.done
    c = tracking.client(uri)
    run = c.get_run(summary.failed[0].run_id)
    assert run.info.status == "FAILED"
    assert "exit code -9" in run.data.tags["error"]
    assert [(m.step, m.value) for m in c.get_metric_history(run.info.run_id, "loss")] == [(1, 1.5)]
    assert "traceback.txt" in {a.path for a in c.list_artifacts(run.info.run_id)}
    assert c.get_run(summary.parent_run_id).info.status == "FAILED"
