"""Executors: where the runs of one invocation execute.

- `InlineExecutor`: one after another in this process.
- `LocalExecutor`: up to N at once, each in a fresh worker process (one GPU each when GPUs
  are present, CPU threads split between workers otherwise). A worker that dies (SIGKILL,
  segfault, out of memory) yields a crashed outcome instead of stopping the suite; workers die
  with the invoking process (Linux).
- `SlurmExecutor`: one submitit array job per invocation; a preempted or timed-out task is
  requeued by submitit and resumes from its run's checkpoint (the job is `Checkpointable`).
  `cluster="local"` runs the same jobs as local processes (tests, laptops).

Every executor takes a `job(spec) -> RunOutcome` that must be picklable for the process-based
ones (a module-level function or a `functools.partial` of one), and yields outcomes as runs end.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from harness.suite import RunSpec


@dataclass
class RunOutcome:
    """How one run ended. `crashed`: the process running it died before it could say."""

    key: str
    row: str
    status: str  # FINISHED | FAILED | KILLED
    run_id: str | None = None
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    crashed: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "FINISHED"


Job = Callable[[RunSpec], RunOutcome]


def _failed(spec: RunSpec, error: str, crashed: bool = True) -> RunOutcome:
    return RunOutcome(spec.key, spec.row, "FAILED", error=error, crashed=crashed)


class InlineExecutor:
    """Runs each spec in this process, in order."""

    name = "inline"

    def run(self, specs: Sequence[RunSpec], job: Job) -> Iterator[RunOutcome]:
        for spec in specs:
            try:
                yield job(spec)
            except Exception as err:  # the job records its own failures; this is the store failing
                yield _failed(spec, f"{type(err).__name__}: {err}")


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def _redirect_output(log_path: str) -> None:
    """Point this process's stdout/stderr (file descriptors included) at the run's log."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log_path, "ab", buffering=0) as log_file:
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM this worker when the invoking process dies, however it dies.

    Otherwise a SIGTERMed or SIGKILLed `shapeprop-bench run` leaves its workers training on, and
    the next invocation trains the same runs into the same folders beside them. The run a worker
    leaves stays RUNNING in MLflow and resumes from its checkpoint next time.
    """
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _local_worker(
    job: Job, env: dict[str, str], log_path: Callable[[RunSpec], Path], conn: Any, parent_pid: int
) -> None:
    """Body of a local worker process: take specs from `conn` until None, send back outcomes."""
    _die_with_parent(parent_pid)
    os.environ.update(env)  # before the job imports torch
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (lives as long as the process)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    while True:
        spec = conn.recv()
        if spec is None:
            break
        _redirect_output(str(log_path(spec)))
        try:
            outcome = job(spec)
        except BaseException as err:  # report instead of dying silently
            outcome = _failed(spec, f"{type(err).__name__}: {err}", crashed=False)
        conn.send(outcome)
    conn.close()


class LocalExecutor:
    """Up to `workers` runs at once, in worker processes started fresh for each invocation.

    With GPUs, worker i sees only GPU i % n (CUDA_VISIBLE_DEVICES); without, the CPU threads
    are split evenly so that N workers do not oversubscribe the cores. Each run's stdout and
    stderr go to its log file. A worker that dies is replaced, and its run is reported crashed.
    """

    name = "local"

    def __init__(self, workers: int, log_path: Callable[[RunSpec], Path]):
        if workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.log_path = log_path
        self.gpus = _gpu_count()

    def _env(self, slot: int) -> dict[str, str]:
        if self.gpus:
            return {"CUDA_VISIBLE_DEVICES": str(slot % self.gpus)}
        threads = str(max(1, (os.cpu_count() or 1) // self.workers))
        return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "CUDA_VISIBLE_DEVICES": ""}

    def run(self, specs: Sequence[RunSpec], job: Job) -> Iterator[RunOutcome]:
        ctx = mp.get_context("spawn")  # no forked torch/MLflow state in the workers
        queue = list(specs)
        workers: dict[int, tuple[Any, Any]] = {}  # slot -> (process, connection)
        busy: dict[int, RunSpec] = {}  # slot -> the spec it runs

        def start(slot: int) -> None:
            parent_end, child_end = ctx.Pipe()
            process = ctx.Process(
                target=_local_worker,
                args=(job, self._env(slot), self.log_path, child_end, os.getpid()),
                name=f"shapeprop-bench-worker-{slot}",
                daemon=False,  # a run may start its own processes (DataLoader workers)
            )
            process.start()
            child_end.close()
            workers[slot] = (process, parent_end)

        def stop(slot: int) -> None:
            process, conn = workers.pop(slot)
            try:
                conn.send(None)
            except OSError:
                pass
            process.join(10)
            if process.is_alive():
                process.terminate()
            conn.close()

        try:
            for slot in range(min(self.workers, len(queue))):
                start(slot)
            while queue or busy:
                for slot in list(workers):
                    if slot not in busy and queue:
                        busy[slot] = queue.pop(0)
                        workers[slot][1].send(busy[slot])
                    elif slot not in busy:
                        stop(slot)
                ready = wait([w[1] for w in workers.values()] + [w[0].sentinel for w in workers.values()])
                for slot, (process, conn) in list(workers.items()):
                    if conn not in ready and process.sentinel not in ready:
                        continue
                    outcome = None
                    try:
                        if conn.poll():
                            outcome = conn.recv()
                    except (EOFError, OSError):
                        outcome = None  # the worker died (mid-message or before sending)
                    if outcome is not None:
                        busy.pop(slot)
                        yield outcome
                        continue
                    process.join(1)
                    if process.is_alive():
                        continue  # a spurious wake-up
                    workers.pop(slot)
                    conn.close()
                    spec = busy.pop(slot, None)
                    if spec is not None:
                        yield _failed(spec, f"worker process died with exit code {process.exitcode}")
                    if queue:
                        start(slot)
        finally:
            for slot in list(workers):
                process, conn = workers.pop(slot)
                if slot in busy:  # interrupted: stop what still runs
                    process.terminate()
                else:
                    try:
                        conn.send(None)
                    except OSError:
                        pass
                process.join(10)
                conn.close()


class _Requeueable:
    """A job that submitit requeues on preemption/timeout with the same spec; the run resumes
    from its checkpoint because `run_one` finds its work directory and MLflow run again."""

    def __init__(self, job: Job):
        self.job = job

    def __call__(self, spec: RunSpec) -> RunOutcome:
        return self.job(spec)

    def checkpoint(self, spec: RunSpec) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, spec)


class SlurmExecutor:
    """One submitit array job for all specs of the invocation; waits for the tasks and yields outcomes."""

    name = "slurm"

    def __init__(
        self,
        folder: Path,
        workers: int,
        cluster: str | None = None,
        poll_s: float = 5.0,
        **parameters: Any,
    ):
        self.folder = Path(folder)
        self.workers = workers
        self.cluster = cluster
        self.poll_s = poll_s
        self.parameters = parameters

    def run(self, specs: Sequence[RunSpec], job: Job) -> Iterator[RunOutcome]:
        import submitit

        if not specs:
            return
        executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        params = {"slurm_array_parallelism": self.workers, "name": f"shapeprop-bench-{specs[0].suite}"}
        params.update(self.parameters)
        executor.update_parameters(**params)
        jobs = executor.map_array(_Requeueable(job), list(specs))
        pending = dict(zip(jobs, specs, strict=True))
        try:
            while pending:
                finished = [j for j in pending if j.done()]
                if not finished:
                    time.sleep(self.poll_s)
                    continue
                for j in finished:
                    spec = pending.pop(j)
                    try:
                        yield j.result()
                    except Exception as err:  # the task died before returning (node failure, OOM, cancel)
                        yield _failed(spec, f"slurm job {j.job_id} failed: {str(err).strip()[-2000:]}")
        finally:
            for j in pending:
                j.cancel(check=False)


def make_executor(
    name: str,
    workers: int,
    runs_root: Path,
    suite_name: str,
    log_path: Callable[[RunSpec], Path],
    **slurm: Any,
) -> InlineExecutor | LocalExecutor | SlurmExecutor:
    """The executor called `name` (inline | local | slurm)."""
    if name == "inline":
        return InlineExecutor()
    if name == "local":
        return LocalExecutor(workers, log_path)
    if name == "slurm":
        return SlurmExecutor(Path(runs_root) / suite_name / "submitit", workers, **slurm)
    raise ValueError(f"unknown executor '{name}' (inline, local, slurm)")
