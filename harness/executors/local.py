"""The local executor: runs in worker processes of this machine, each run on its own GPUs."""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.spawn
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from harness.executors.base import Job, RunOutcome, failed, rank_env, run_shape
from harness.suite import RunSpec


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_log(log_file: Path, rank: int) -> Path:
    """Rank 0 writes the run's log; rank r > 0 `run.rank<r>.log` beside it."""
    return log_file if rank == 0 else log_file.with_name(f"{log_file.stem}.rank{rank}{log_file.suffix}")


class _PipeDisplay:
    """A worker's stand-in for the suite's display (`harness.console.SuiteProgress`): it sends the
    run's start and steps (at most one every `every_s` seconds) through the worker's outcome pipe;
    `_Running.outcome` shows them on the display."""

    def __init__(self, conn: Any, every_s: float = 0.5):
        self.conn, self.every_s, self.last_sent = conn, every_s, 0.0

    def run_started(self, key: str, label: str, max_steps: int, start_step: int) -> None:
        self.conn.send(("run_started", (key, label, max_steps, start_step)))

    def step(self, key: str, step: int, loss: float | None) -> None:
        now = time.monotonic()
        if now - self.last_sent >= self.every_s:
            self.last_sent = now
            self.conn.send(("step", (key, step, loss)))


def _local_worker(
    job: Job,
    env: dict[str, str],
    log_file: Path,
    conn: Any,
    parent_pid: int,
    spec: RunSpec,
    show_progress: bool = False,
) -> None:
    """Body of a local worker process: run `spec` (as one rank of it, when `env` says so), send the
    outcome back through `conn` (rank 0 only; the other ranks have none), and with `show_progress`
    the run's steps before it."""
    _die_with_parent(parent_pid)
    if "RANK" in env:  # inside a Slurm allocation Lightning would read the allocation's ranks instead
        for name in [n for n in os.environ if n.startswith("SLURM_")]:
            del os.environ[name]
    os.environ.update(env)  # before the job imports torch
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (lives as long as the process)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    _redirect_output(str(log_file))
    try:
        outcome = job(spec, display=_PipeDisplay(conn)) if show_progress and conn is not None else job(spec)
    except BaseException as err:  # report instead of dying silently
        outcome = failed(spec, f"{type(err).__name__}: {err}", crashed=False)
    if conn is not None:
        conn.send(outcome)
        conn.close()


def _exit_hint(code: int) -> str:
    """What an exit code says beyond itself. A spawned worker whose interpreter cannot be executed
    exits 255 and prints nothing anywhere: multiprocessing does not read the exec error back."""
    if code != 255:
        return ""
    return (
        f" (the code a worker exits with when its interpreter, {os.fsdecode(multiprocessing.spawn.get_executable())}, could not be "
        "executed, e.g. while its environment is being reinstalled; the run did not finish, so the next "
        "`run` call runs it again)"
    )


@dataclass(eq=False)
class _Running:
    """The worker processes of one run, by rank; rank 0 sends the run's progress (to `display`) and
    then its outcome through `conn`."""

    spec: RunSpec
    processes: list[Any]
    conn: Any
    gpu_ids: list[int]
    display: Any = None

    def waitables(self) -> list[Any]:
        return [self.conn] + [p.sentinel for p in self.processes if p.exitcode is None]

    def outcome(self, ready: list[Any]) -> RunOutcome | None:
        """Rank 0's outcome if it sent one, a crashed outcome if a rank died before it, else None."""
        for process in self.processes:
            if process.sentinel in ready:
                process.join(1)  # reap it, so that its exit code is known
        # The exit codes first, then the pipe: a rank 0 that sent its outcome and exited between
        # the two reads would otherwise read as dead without one.
        codes = [process.exitcode for process in self.processes]
        try:
            while self.conn.poll():  # whatever woke us: a rank may send and exit between two waits
                message = self.conn.recv()
                if isinstance(message, RunOutcome):
                    return message
                if self.display is not None:  # progress: ("step", (key, step, loss)) and the like
                    method, args = message
                    getattr(self.display, method)(*args)
        except (EOFError, OSError):
            pass  # rank 0 died mid-message or before sending
        for rank, code in enumerate(codes):
            if code is not None and (rank == 0 or code != 0):
                what = (
                    "worker process" if len(self.processes) == 1 else f"rank {rank} of {len(self.processes)}"
                )
                return failed(self.spec, f"{what} died with exit code {code}" + _exit_hint(code))
        return None

    def stop(self, grace_s: float) -> None:
        """Wait up to `grace_s` for every rank to exit (rank 0 has reported), then terminate the rest."""
        deadline = time.monotonic() + grace_s
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(10)
        self.conn.close()


class LocalExecutor:
    """Up to `workers` runs at once on this machine, each in worker processes of its own.

    A run of `schedule.devices` > 1 is that many worker processes, one per DDP rank, started here
    with the rank variables set (`rank_env`), each running the job: rank 0 logs the run and sends
    its outcome, the others only train (`harness.runner.run_one`); a rank that dies fails the run
    and stops its other ranks. (Lightning's own launcher would start the ranks by running this
    program's command line again, i.e. the whole suite.)
    With GPUs, a run takes `schedule.devices` of them: it starts only when that many are free
    (and fewer than `workers` runs are going), and sees just those (CUDA_VISIBLE_DEVICES="a,b"),
    disjoint from every other run's. Runs start in suite order, except that a run waiting for GPUs
    lets later, smaller runs that fit go first. A run needing more GPUs than the machine has, or
    more than one node (`schedule.num_nodes`), fails at once (use --executor slurm). Without GPUs,
    `devices` is the number of CPU processes of the run: the CPU threads are split evenly between
    the `workers` runs, and a run's share between its processes, so that nothing oversubscribes
    the cores. Each run's stdout and stderr go to its log file (rank r > 0: `run.rank<r>.log`).
    A worker that dies yields a crashed outcome. Given a `display` (`harness.console.SuiteProgress`),
    each run's steps show on it while it trains (the job is then called as `job(spec, display=...)`).
    """

    name = "local"

    def __init__(self, workers: int, log_path: Callable[[RunSpec], Path], display: Any | None = None):
        if workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.log_path = log_path
        self.display = display
        self.gpus = _gpu_count()

    def _env(self, devices: int, gpu_ids: Sequence[int]) -> dict[str, str]:
        if self.gpus:
            return {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpu_ids)}
        threads = str(max(1, (os.cpu_count() or 1) // self.workers // devices))
        return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "CUDA_VISIBLE_DEVICES": ""}

    def _problem(self, spec: RunSpec) -> str | None:
        """Why `spec` cannot run on this machine, if it cannot."""
        num_nodes, devices = run_shape(spec)
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

    def _start(self, ctx: Any, job: Job, spec: RunSpec, gpu_ids: list[int]) -> _Running:
        devices = run_shape(spec)[1]
        env = self._env(devices, gpu_ids)
        port = _free_port() if devices > 1 else 0
        log_file = Path(self.log_path(spec))
        parent_end, child_end = ctx.Pipe()
        processes = []
        for rank in range(devices):
            rank_vars = rank_env(rank, devices, port) if devices > 1 else {}
            process = ctx.Process(
                target=_local_worker,
                args=(job, {**env, **rank_vars}, _rank_log(log_file, rank), child_end if rank == 0 else None)
                + (os.getpid(), spec, self.display is not None),
                name=f"shapeprop-bench-worker-{spec.row}" + (f"-rank{rank}" if devices > 1 else ""),
                daemon=False,  # a run may start its own processes (DataLoader workers)
            )
            process.start()
            processes.append(process)
        child_end.close()
        return _Running(spec, processes, parent_end, gpu_ids, self.display)

    def run(self, specs: Sequence[RunSpec], job: Job) -> Iterator[RunOutcome]:
        ctx = mp.get_context("spawn")  # no forked torch/MLflow state in the workers
        queue: list[RunSpec] = []
        for spec in specs:
            problem = self._problem(spec)
            if problem is not None:
                yield failed(spec, problem, crashed=False)
            else:
                queue.append(spec)
        free = list(range(self.gpus))  # GPU ids no run holds
        running: list[_Running] = []
        try:
            while queue or running:
                for spec in list(queue):  # suite order; a run that does not fit lets the next try
                    if len(running) >= self.workers:
                        break
                    devices = run_shape(spec)[1]
                    if self.gpus and devices > len(free):
                        continue
                    gpu_ids = free[:devices] if self.gpus else []
                    del free[: len(gpu_ids)]
                    queue.remove(spec)
                    running.append(self._start(ctx, job, spec, gpu_ids))
                ready = wait([w for run in running for w in run.waitables()])
                for run in list(running):
                    outcome = run.outcome(ready)
                    if outcome is None:
                        continue
                    run.stop(60 if outcome.ok else 5)  # its GPUs are free once its ranks have exited
                    running.remove(run)
                    free = sorted(free + run.gpu_ids)
                    yield outcome
        finally:
            for run in running:  # interrupted: stop what still runs
                run.stop(0)
