"""Executors: where the runs of one invocation execute.

- `InlineExecutor`: one after another in this process.
- `LocalExecutor`: up to N at once, each in a fresh worker process; with GPUs, each run on its
  own `schedule.devices` of them (CPU threads split between runs otherwise). A worker that dies
  (SIGKILL, segfault, out of memory) yields a crashed outcome instead of stopping the suite;
  workers die with the invoking process (Linux).
- `SlurmExecutor`: one submitit array job per run shape (nodes x GPUs); a preempted or timed-out task is
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


def _shape(spec: RunSpec) -> tuple[int, int]:
    """(num_nodes, devices) of a run: the machines and the GPUs (processes) per machine it takes."""
    schedule = spec.config.schedule
    return schedule.num_nodes, schedule.devices


def _local_worker(
    job: Job,
    env: dict[str, str],
    log_path: Callable[[RunSpec], Path],
    conn: Any,
    parent_pid: int,
    spec: RunSpec,
) -> None:
    """Body of a local worker process: run `spec`, send back its outcome through `conn`."""
    _die_with_parent(parent_pid)
    os.environ.update(env)  # before the job imports torch
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (lives as long as the process)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    _redirect_output(str(log_path(spec)))
    try:
        outcome = job(spec)
    except BaseException as err:  # report instead of dying silently
        outcome = _failed(spec, f"{type(err).__name__}: {err}", crashed=False)
    conn.send(outcome)
    conn.close()


class LocalExecutor:
    """Up to `workers` runs at once on this machine, each in a worker process of its own.

    With GPUs, a run takes `schedule.devices` of them: it starts only when that many are free
    (and fewer than `workers` runs are going), and sees just those (CUDA_VISIBLE_DEVICES="a,b"),
    disjoint from every other run's; Lightning starts its DDP processes on them. Runs start in
    suite order, except that a run waiting for GPUs lets later, smaller runs that fit go first.
    A run needing more GPUs than the machine has, or more than one node (`schedule.num_nodes`),
    fails at once (use --executor slurm). Without GPUs, `devices` is the number of CPU processes
    of the run: the CPU threads are split evenly between the `workers` runs, and a run's share
    between its processes, so that nothing oversubscribes the cores.
    Each run's stdout and stderr go to its log file. A worker that dies yields a crashed outcome.
    """

    name = "local"

    def __init__(self, workers: int, log_path: Callable[[RunSpec], Path]):
        if workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.log_path = log_path
        self.gpus = _gpu_count()

    def _env(self, devices: int, gpu_ids: Sequence[int]) -> dict[str, str]:
        if self.gpus:
            return {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpu_ids)}
        threads = str(max(1, (os.cpu_count() or 1) // self.workers // devices))
        return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "CUDA_VISIBLE_DEVICES": ""}

    def _problem(self, spec: RunSpec) -> str | None:
        """Why `spec` cannot run on this machine, if it cannot."""
        num_nodes, devices = _shape(spec)
        if num_nodes > 1:
            return (
                f"run {spec.row} [{spec.key}] asks for schedule.num_nodes={num_nodes} (x {devices} "
                "devices): the local executor has this one machine; use --executor slurm"
            )
        if self.gpus and devices > self.gpus:
            return (
                f"run {spec.row} [{spec.key}] needs schedule.devices={devices} GPUs but this machine "
                f"has {self.gpus}; lower schedule.devices or use --executor slurm"
            )
        return None

    def run(self, specs: Sequence[RunSpec], job: Job) -> Iterator[RunOutcome]:
        ctx = mp.get_context("spawn")  # no forked torch/MLflow state in the workers
        queue: list[RunSpec] = []
        for spec in specs:
            problem = self._problem(spec)
            if problem is not None:
                yield _failed(spec, problem, crashed=False)
            else:
                queue.append(spec)
        free = list(range(self.gpus))  # GPU ids no run holds
        running: dict[Any, tuple[Any, RunSpec, list[int]]] = {}  # connection -> (process, spec, GPU ids)

        def start(spec: RunSpec, gpu_ids: list[int]) -> None:
            parent_end, child_end = ctx.Pipe()
            env = self._env(_shape(spec)[1], gpu_ids)
            process = ctx.Process(
                target=_local_worker,
                args=(job, env, self.log_path, child_end, os.getpid(), spec),
                name=f"shapeprop-bench-worker-{spec.row}",
                daemon=False,  # a run may start its own processes (DataLoader workers, DDP ranks)
            )
            process.start()
            child_end.close()
            running[parent_end] = (process, spec, gpu_ids)

        try:
            while queue or running:
                for spec in list(queue):  # suite order; a run that does not fit lets the next try
                    if len(running) >= self.workers:
                        break
                    devices = _shape(spec)[1]
                    if self.gpus and devices > len(free):
                        continue
                    gpu_ids = free[:devices] if self.gpus else []
                    del free[: len(gpu_ids)]
                    queue.remove(spec)
                    start(spec, gpu_ids)
                ready = wait(list(running) + [p.sentinel for p, _, _ in running.values()])
                for conn, (process, spec, gpu_ids) in list(running.items()):
                    if conn not in ready and process.sentinel not in ready:
                        continue
                    outcome = None
                    try:
                        if conn.poll():
                            outcome = conn.recv()
                    except (EOFError, OSError):
                        outcome = None  # the worker died (mid-message or before sending)
                    if outcome is None:
                        process.join(1)
                        if process.is_alive():
                            continue  # a spurious wake-up
                        outcome = _failed(spec, f"worker process died with exit code {process.exitcode}")
                    process.join(60)  # its GPUs are free once it has exited
                    if process.is_alive():
                        process.terminate()
                        process.join(10)
                    del running[conn]
                    conn.close()
                    free = sorted(free + gpu_ids)
                    yield outcome
        finally:
            for conn, (process, _spec, _ids) in running.items():  # interrupted: stop what still runs
                process.terminate()
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
    """The specs of an invocation as submitit array jobs, one per run shape; waits and yields outcomes.

    A run of `schedule.num_nodes` nodes x `schedule.devices` GPUs asks Slurm for `nodes=num_nodes`,
    `gpus_per_node=devices` and one task per GPU (`tasks_per_node=devices`), which is what
    Lightning's SLURM environment expects: every task runs the job as one DDP rank (SLURM_PROCID),
    and the run's outcome is global rank 0's. An array job has one set of sbatch parameters, so
    the specs are grouped by (num_nodes, devices), one array job per group (`workers` is the array
    parallelism of each). `max_gpus_per_node`: the most GPUs a node has (runs needing more fail
    before submission), 0 for a partition without GPUs (no GPUs asked for; `devices` are then
    tasks). `parameters` are submitit's (cpus_per_task, timeout_min, slurm_partition, ...).

    On submitit's local cluster (`cluster="local"`, tests and laptops) a run is one local task
    that starts its own DDP processes, like `LocalExecutor`, and cannot take more than one node.
    """

    name = "slurm"

    def __init__(
        self,
        folder: Path,
        workers: int,
        cluster: str | None = None,
        poll_s: float = 5.0,
        max_gpus_per_node: int | None = None,
        **parameters: Any,
    ):
        self.folder = Path(folder)
        self.workers = workers
        self.cluster = cluster
        self.poll_s = poll_s
        self.max_gpus_per_node = max_gpus_per_node
        self.parameters = parameters

    def _problem(self, spec: RunSpec, cluster: str) -> str | None:
        num_nodes, devices = _shape(spec)
        if cluster != "slurm" and num_nodes > 1:
            return (
                f"run {spec.row} [{spec.key}] asks for schedule.num_nodes={num_nodes}: submitit's "
                f"'{cluster}' cluster has this one machine; use --slurm-cluster slurm"
            )
        if cluster == "slurm" and self.max_gpus_per_node and devices > self.max_gpus_per_node:
            return (
                f"run {spec.row} [{spec.key}] needs schedule.devices={devices} GPUs per node, more "
                f"than the {self.max_gpus_per_node} of --slurm-gpus"
            )
        return None

    def submitit_executor(self, suite: str, num_nodes: int, devices: int) -> Any:
        """The submitit executor, parameters set, for the array job of the runs of one shape."""
        import submitit

        executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        params: dict[str, Any] = {"slurm_array_parallelism": self.workers, "name": f"shapeprop-bench-{suite}"}
        if executor.cluster == "slurm":
            params.update(nodes=num_nodes, tasks_per_node=devices)
            if self.max_gpus_per_node != 0:
                params["gpus_per_node"] = devices
        else:
            params.update(nodes=1, tasks_per_node=1)
        params.update(self.parameters)
        executor.update_parameters(**params)
        return executor

    def run(self, specs: Sequence[RunSpec], job: Job) -> Iterator[RunOutcome]:
        if not specs:
            return
        groups: dict[tuple[int, int], list[RunSpec]] = {}
        for spec in specs:
            groups.setdefault(_shape(spec), []).append(spec)
        pending: dict[Any, RunSpec] = {}
        try:
            for (num_nodes, devices), group in groups.items():
                executor = self.submitit_executor(specs[0].suite, num_nodes, devices)
                todo = []
                for spec in group:
                    problem = self._problem(spec, executor.cluster)
                    if problem is not None:
                        yield _failed(spec, problem, crashed=False)
                    else:
                        todo.append(spec)
                if todo:
                    jobs = executor.map_array(_Requeueable(job), todo)
                    pending.update(zip(jobs, todo, strict=True))
            while pending:
                finished = [j for j in pending if j.done()]
                if not finished:
                    time.sleep(self.poll_s)
                    continue
                for j in finished:
                    spec = pending.pop(j)
                    yield _rank_zero_outcome(j, spec)
        finally:
            for j in pending:
                j.cancel(check=False)


def _rank_zero_outcome(job: Any, spec: RunSpec) -> RunOutcome:
    """The outcome of a finished submitit job: its global rank 0's (task 0), the other ranks' are
    not the run's (`job.result()` refuses a job of several tasks)."""
    try:
        return job.task(0).result()
    except Exception as err:  # the task died before returning (node failure, OOM, cancel)
        return _failed(spec, f"slurm job {job.job_id} failed: {str(err).strip()[-2000:]}")


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
