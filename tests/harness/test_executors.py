"""Executors: the local pool isolates runs in worker processes and survives a worker dying.

The jobs here are small module-level functions (a worker process imports them by name); the
real experiment runs through these executors in tests/e2e/test_harness.py.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.executors import InlineExecutor, LocalExecutor, RunOutcome, SlurmExecutor, make_executor
from harness.executors import local as local_executor
from harness.executors import slurm as slurm_executor
from harness.suite import expand, parse_suite
from tests.helpers import ROOT

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


def train_with_progress(spec, display=None) -> RunOutcome:
    """Reports its start and 3 steps (0.6 s apart, more than the pipe's 0.5 s thinning, so none is dropped)."""
    display.run_started(spec.key, spec.row, 3, 0)
    for step in range(1, 4):
        time.sleep(0.6)
        display.step(spec.key, step, 1.0 / step)
    return RunOutcome(spec.key, spec.row, "FINISHED", run_id=f"run-{spec.row}")


class RecordingDisplay:
    def __init__(self):
        self.calls = []

    def run_started(self, key, label, max_steps, start_step):
        self.calls.append(("start", label, max_steps, start_step))

    def step(self, key, step, loss):
        self.calls.append(("step", key, step, loss))


def log_path(spec, root: str) -> Path:
    return Path(root) / f"{spec.row}.log"


def test_local_workers_show_their_runs_steps_on_the_display(tmp_path):
    """Each worker's start and steps reach the parent's display, keyed by run, before its outcome."""
    specs = expand(SUITE)[:2]
    display = RecordingDisplay()
    executor = LocalExecutor(2, functools.partial(log_path, root=str(tmp_path)), display)
    outcomes = list(executor.run(specs, train_with_progress))
    assert sorted(o.row for o in outcomes) == ["r0", "r1"]
    assert all(o.ok for o in outcomes), [(o.row, o.status, o.error) for o in outcomes]
    for spec in specs:
        assert ("start", spec.row, 3, 0) in display.calls
        steps = [c[2:] for c in display.calls if c[0] == "step" and c[1] == spec.key]
        assert steps == [(1, 1.0), (2, 0.5), (3, 1.0 / 3)]


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


def test_a_worker_whose_interpreter_cannot_be_executed_fails_its_run_with_a_hint(tmp_path):
    import multiprocessing.spawn

    executable = multiprocessing.spawn.get_executable()
    multiprocessing.spawn.set_executable(str(tmp_path / "no-python"))
    try:
        executor = LocalExecutor(1, functools.partial(log_path, root=str(tmp_path)))
        (outcome,) = executor.run(expand(SUITE)[:1], report_process)
    finally:
        multiprocessing.spawn.set_executable(executable)
    assert outcome.crashed and "exit code 255" in outcome.error
    assert f"its interpreter, {tmp_path / 'no-python'}, could not be executed" in outcome.error


@pytest.mark.skipif(sys.platform != "linux", reason="workers die with their parent through Linux's prctl")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_local_workers_die_with_the_invoking_process(tmp_path, sig):
    """Killing `run` (not its process group) must not leave its workers training on."""
    script = textwrap.dedent(
        f"""
        import functools, sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.harness.test_executors import SUITE, log_path, write_pid_and_sleep
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


def test_an_outcome_sent_as_the_worker_exits_is_not_read_as_a_crash():
    """The parent wakes on a progress message; between its reading the pipe and the worker's exit
    code, the worker sends its outcome and exits 0. That is a finished run, not a dead worker."""
    spec = expand(SUITE)[0]
    finished = RunOutcome(spec.key, spec.row, "FINISHED", run_id="run-r0")
    pipe = [("step", (spec.key, 3, 0.25))]  # what woke the parent

    class Conn:
        def poll(self):
            return bool(pipe)

        def recv(self):
            return pipe.pop(0)

    class Worker:
        sentinel = object()
        sent = False

        def join(self, timeout=None):
            pass

        @property
        def exitcode(self):  # the worker sends its outcome and exits at the moment this is read
            if not self.sent:
                pipe.append(finished)
                self.sent = True
            return 0

    display = RecordingDisplay()
    conn = Conn()
    running = local_executor._Running(spec, [Worker()], conn, [], display)
    assert running.outcome([conn]) is finished
    assert display.calls == [("step", spec.key, 3, 0.25)]


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
    from harness.runner import RunOptions, run_suite

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    suite = parse_suite("name: crash\nrows:\n  - {label: doomed, method: mask_rcnn}\n", "crash.yaml")
    summary = run_suite(
        suite,
        RunOptions(
            tracking_uri=uri,
            runs_root=tmp_path / "runs",
            executor="local",
            experiment_fn=die_after_a_checkpoint,
        ),
    )
    assert [o.row for o in summary.failed] == ["doomed"] and not summary.done
    c = tracking.client(uri)
    run = c.get_run(summary.failed[0].run_id)
    assert run.info.status == "FAILED"
    assert "exit code -9" in run.data.tags["error"]
    assert [(m.step, m.value) for m in c.get_metric_history(run.info.run_id, "loss")] == [(1, 1.5)]
    assert "traceback.txt" in {a.path for a in c.list_artifacts(run.info.run_id)}
    assert c.get_run(summary.parent_run_id).info.status == "FAILED"


def shaped_suite(*shapes: tuple[int, int]):
    """One run per (num_nodes, devices), rows g0, g1, ..."""
    rows = "".join(
        f"  - {{label: g{i}, method: mask_rcnn, overrides: {{seed: {i}, schedule.num_nodes: {n}, "
        f"schedule.devices: {d}}}}}\n"
        for i, (n, d) in enumerate(shapes)
    )
    return expand(parse_suite(f"name: shaped\nrows:\n{rows}", "shaped.yaml"))


def hold_gpus(spec, root: str) -> RunOutcome:
    """Holds the GPUs of CUDA_VISIBLE_DEVICES for a while, one lock file each: a GPU that another
    run holds at the same time is a clash. Records what it saw in <root>/<row>.json. The other
    ranks of a run of several processes share their rank 0's GPUs and hold nothing."""
    if os.environ.get("RANK", "0") != "0":
        return RunOutcome(spec.key, spec.row, "FINISHED")
    ids = [int(i) for i in os.environ["CUDA_VISIBLE_DEVICES"].split(",")]
    held, clashes = [], []
    for i in ids:
        try:
            Path(root, f"gpu{i}").open("x").close()
            held.append(i)
        except FileExistsError:
            clashes.append(i)
    start = time.time()
    time.sleep(1.5)
    end = time.time()
    for i in held:
        Path(root, f"gpu{i}").unlink()
    record = {"ids": ids, "clashes": clashes, "start": start, "end": end}
    Path(root, f"{spec.row}.json").write_text(json.dumps(record))
    return RunOutcome(spec.key, spec.row, "FINISHED")


@pytest.mark.timeout(120)  # a run that can never get its GPUs must not hang the suite
def test_local_executor_gives_each_run_its_own_gpus_and_never_more_than_the_machine_has(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(local_executor, "_gpu_count", lambda: 4)
    specs = shaped_suite((1, 2), (1, 2), (1, 1), (1, 1), (1, 8), (2, 1))
    executor = LocalExecutor(4, functools.partial(log_path, root=str(tmp_path)))
    outcomes = {o.row: o for o in executor.run(specs, functools.partial(hold_gpus, root=str(tmp_path)))}
    assert set(outcomes) == {f"g{i}" for i in range(6)}
    assert all(outcomes[f"g{i}"].ok for i in range(4))
    too_big, multi_node = outcomes["g4"], outcomes["g5"]  # refused at once, nothing started
    assert too_big.status == "FAILED" and not too_big.crashed
    assert "g4" in too_big.error and "schedule.devices=8" in too_big.error and "has 4" in too_big.error
    assert multi_node.status == "FAILED" and "num_nodes=2" in multi_node.error
    assert "--executor slurm" in multi_node.error
    assert not (tmp_path / "g4.json").exists() and not (tmp_path / "g5.json").exists()

    seen = {f"g{i}": json.loads((tmp_path / f"g{i}.json").read_text()) for i in range(4)}
    for row, want in {"g0": 2, "g1": 2, "g2": 1, "g3": 1}.items():
        ids = seen[row]["ids"]  # exactly its count, distinct, of the machine's
        assert len(ids) == want and len(set(ids)) == want and set(ids) <= {0, 1, 2, 3}, (row, ids)
        assert not seen[row]["clashes"], f"{row} shared GPUs {seen[row]['clashes']} with another run"
    events = sorted(
        [(r["start"], len(r["ids"])) for r in seen.values()]
        + [(r["end"], -len(r["ids"])) for r in seen.values()],
        key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
    )
    in_use = [sum(n for _, n in events[: k + 1]) for k in range(len(events))]
    assert max(in_use) <= 4
    for a in seen:  # runs that overlapped in time held disjoint GPUs
        for b in seen:
            if a < b and seen[a]["start"] < seen[b]["end"] and seen[b]["start"] < seen[a]["end"]:
                assert not set(seen[a]["ids"]) & set(seen[b]["ids"]), (a, b, seen[a], seen[b])


def report_threads(spec) -> RunOutcome:
    threads = float(os.environ["OMP_NUM_THREADS"])
    return RunOutcome(spec.key, spec.row, "FINISHED", metrics={"threads": threads})


def test_local_executor_on_the_cpu_splits_threads_between_runs_and_their_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(local_executor, "_gpu_count", lambda: 0)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    executor = LocalExecutor(2, functools.partial(log_path, root=str(tmp_path)))
    outcomes = {o.row: o for o in executor.run(shaped_suite((1, 1), (1, 4)), report_threads)}
    assert outcomes["g0"].metrics["threads"] == 8.0  # 16 cores / 2 workers
    assert outcomes["g1"].metrics["threads"] == 2.0  # ... / 4 processes of its own


def fake_slurm_bin(tmp_path: Path) -> str:
    """A folder with `sbatch` and `srun` that do nothing: enough for submitit to render, not to submit."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sbatch", "srun"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    return str(bin_dir)


def test_sbatch_of_a_two_node_eight_gpu_run(tmp_path, monkeypatch):
    """The sbatch script submitit would submit for a 2 x 8 GPU run, through the CLI's parameters."""
    from submitit.slurm.slurm import _make_sbatch_string

    from harness.cli.run import _slurm_parameters

    monkeypatch.setenv("PATH", fake_slurm_bin(tmp_path) + os.pathsep + os.environ["PATH"])
    params = _slurm_parameters("slurm", "gpu", 600, None, 10, 400, ("constraint=h100",))
    slurm = SlurmExecutor(tmp_path / "submitit", workers=3, **params)
    submitit_executor = slurm.submitit_executor("big", num_nodes=2, devices=8)
    inner = submitit_executor._executor  # submitit's SlurmExecutor
    assert inner._num_tasks() == 16  # one task per GPU: DDP ranks 0..15, task 0 is global rank 0
    text = _make_sbatch_string(
        command="python -m submitit.core._submit x", folder=inner.folder, map_count=5, **inner.parameters
    )
    lines = set(text.splitlines())
    for line in [
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --cpus-per-task=10",
        "#SBATCH --mem=400GB",
        "#SBATCH --time=600",
        "#SBATCH --partition=gpu",
        "#SBATCH --constraint=h100",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --job-name=shapeprop-bench-big",
        "#SBATCH --array=0-4%3",
        "#SBATCH --open-mode=append",
    ]:
        assert line in lines, f"{line} not in\n{text}"
    assert any(line.startswith("srun ") for line in lines)  # srun starts the 16 tasks

    cpu = SlurmExecutor(tmp_path / "cpu", workers=1, **{**params, "max_gpus_per_node": 0})
    cpu_params = cpu.submitit_executor("big", num_nodes=2, devices=8)._executor.parameters
    assert "gpus_per_node" not in cpu_params and cpu_params["ntasks_per_node"] == 8


def test_slurm_executor_refuses_runs_wider_than_a_node_before_submitting(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_slurm_bin(tmp_path) + os.pathsep + os.environ["PATH"])
    slurm = SlurmExecutor(tmp_path / "submitit", workers=1, cluster="slurm", max_gpus_per_node=4)
    (outcome,) = slurm.run(shaped_suite((1, 8)), report_rank)  # the fake sbatch would fail
    assert (
        outcome.status == "FAILED"
        and "schedule.devices=8" in outcome.error
        and "--slurm-gpus" in outcome.error
    )


def report_rank(spec) -> RunOutcome:
    """Each task of a submitit job says its global rank; rank 1 fails."""
    import submitit

    rank = submitit.JobEnvironment().global_rank
    if rank == 1:
        raise RuntimeError("rank 1 has nothing to report")
    return RunOutcome(spec.key, spec.row, "FINISHED", metrics={"rank": float(rank)})


def test_the_outcome_of_a_job_of_several_tasks_is_global_rank_zeros(tmp_path, monkeypatch):
    """Under Slurm each GPU is one task running the job (one DDP rank); rank 0's return is the run's."""
    import submitit

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    (spec,) = shaped_suite((1, 3))
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="local")
    executor.update_parameters(tasks_per_node=3, timeout_min=5)
    job = executor.submit(report_rank, spec)
    job.wait()
    outcome = slurm_executor._rank_zero_outcome(job, spec)
    assert outcome.ok and outcome.metrics == {"rank": 0.0}


def test_slurm_executor_submits_one_array_job_per_run_shape(tmp_path, monkeypatch):
    """Through submitit's local cluster: runs of two shapes, two array jobs; more than one node is
    refused there (one machine)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    import submitit

    arrays = []
    map_array = submitit.AutoExecutor.map_array

    def recording_map_array(self, fn, specs):
        arrays.append(sorted(s.row for s in specs))
        return map_array(self, fn, specs)

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", recording_map_array)
    specs = shaped_suite((1, 1), (1, 2), (1, 1), (2, 1))
    slurm = SlurmExecutor(tmp_path / "submitit", workers=2, cluster="local", poll_s=0.2, timeout_min=5)
    outcomes = {o.row: o for o in slurm.run(specs, report_process)}
    assert set(outcomes) == {"g0", "g1", "g2", "g3"}
    assert all(outcomes[r].ok for r in ("g0", "g1", "g2"))
    assert outcomes["g3"].status == "FAILED" and "num_nodes=2" in outcomes["g3"].error
    assert sorted(arrays) == [["g0", "g2"], ["g1"]]  # (1 node, 1 device) and (1 node, 2 devices)


def record_rank_variables(spec, root: str) -> RunOutcome:
    """Records the rank variables this process was started with in <root>/<row>.rank<R>.json."""
    names = ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS")
    seen = {n: os.environ.get(n) for n in names}
    print(f"rank {seen['RANK']} of {spec.row}")
    Path(root, f"{spec.row}.rank{seen['RANK']}.json").write_text(json.dumps(seen))
    return RunOutcome(spec.key, spec.row, "FINISHED", metrics={"rank": float(seen["RANK"] or -1)})


def test_a_run_of_several_processes_is_that_many_ranks_and_reports_rank_zeros_outcome(tmp_path, monkeypatch):
    monkeypatch.setattr(local_executor, "_gpu_count", lambda: 0)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    executor = LocalExecutor(1, functools.partial(log_path, root=str(tmp_path)))
    job = functools.partial(record_rank_variables, root=str(tmp_path))
    outcomes = {o.row: o for o in executor.run(shaped_suite((1, 1), (1, 3)), job)}
    assert outcomes["g0"].ok and outcomes["g1"].ok
    assert outcomes["g1"].metrics == {"rank": 0.0}  # the run's outcome is global rank 0's
    alone = json.loads((tmp_path / "g0.rankNone.json").read_text())
    assert alone["RANK"] is None and alone["WORLD_SIZE"] is None  # one process: no DDP variables
    ranks = [json.loads((tmp_path / f"g1.rank{r}.json").read_text()) for r in range(3)]
    assert [(r["RANK"], r["LOCAL_RANK"], r["NODE_RANK"], r["WORLD_SIZE"]) for r in ranks] == [
        (str(r), str(r), "0", "3") for r in range(3)
    ]
    assert len({(r["MASTER_ADDR"], r["MASTER_PORT"]) for r in ranks}) == 1  # they meet at one address
    assert {r["OMP_NUM_THREADS"] for r in ranks} == {"1"}  # 4 cores / 1 worker / 3 processes
    assert "rank 0 of g1" in (tmp_path / "g1.log").read_text()  # each rank its own log
    assert "rank 2 of g1" in (tmp_path / "g1.rank2.log").read_text()


def die_on_rank_one(spec, root: str) -> RunOutcome:
    """Rank 1 dies at once; rank 0 waits (as it would, in a collective, for a rank that is gone)."""
    if os.environ["RANK"] == "1":
        os._exit(7)
    Path(root, "rank0.pid").write_text(str(os.getpid()))
    time.sleep(120)
    return RunOutcome(spec.key, spec.row, "FINISHED")


@pytest.mark.timeout(60)
def test_a_rank_that_dies_fails_its_run_and_its_other_ranks_are_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(local_executor, "_gpu_count", lambda: 0)
    executor = LocalExecutor(1, functools.partial(log_path, root=str(tmp_path)))
    job = functools.partial(die_on_rank_one, root=str(tmp_path))
    (outcome,) = executor.run(shaped_suite((1, 2)), job)
    assert outcome.status == "FAILED" and outcome.crashed
    assert outcome.error == "rank 1 of 2 died with exit code 7"
    pid = int((tmp_path / "rank0.pid").read_text()) if (tmp_path / "rank0.pid").exists() else None
    if pid is not None:  # rank 0 had started: it is gone, not left waiting
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
