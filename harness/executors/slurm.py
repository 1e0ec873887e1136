"""The Slurm executor: runs as submitit array jobs, one task per DDP rank."""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.executors.base import Job, RunOutcome, failed, rank_env, run_shape
from harness.suite import RunSpec


def _set_task_rank() -> None:
    """In a submitit job of several tasks, make this task the DDP rank submitit numbers it (`rank_env`'s
    variables). On Slurm, Lightning reads the same ranks from SLURM_PROCID and finds the main node
    itself; on submitit's local cluster the tasks meet on this machine, at a port of the job id."""
    import submitit

    task = submitit.JobEnvironment()
    if task.num_tasks == 1:
        return
    env = rank_env(task.global_rank, task.num_tasks, 20_000 + zlib.crc32(task.job_id.encode()) % 20_000)
    env.update(LOCAL_RANK=str(task.local_rank), NODE_RANK=str(task.node))
    if task.name() == "slurm":
        del env["MASTER_ADDR"], env["MASTER_PORT"]
    os.environ.update(env)


class _Requeueable:
    """A job that submitit requeues on preemption/timeout with the same spec; the run resumes
    from its checkpoint because `run_one` finds its work directory and MLflow run again."""

    def __init__(self, job: Job):
        self.job = job

    def __call__(self, spec: RunSpec) -> RunOutcome:
        _set_task_rank()
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

    On submitit's local cluster (`cluster="local"`, tests and laptops) the tasks of a run are local
    processes, one per device, and a run cannot take more than one node.
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
        num_nodes, devices = run_shape(spec)
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
            params.update(nodes=1, tasks_per_node=devices)
        params.update(self.parameters)
        executor.update_parameters(**params)
        return executor

    def run(self, specs: Sequence[RunSpec], job: Job) -> Iterator[RunOutcome]:
        if not specs:
            return
        groups: dict[tuple[int, int], list[RunSpec]] = {}
        for spec in specs:
            groups.setdefault(run_shape(spec), []).append(spec)
        pending: dict[Any, RunSpec] = {}
        try:
            for (num_nodes, devices), group in groups.items():
                executor = self.submitit_executor(specs[0].suite, num_nodes, devices)
                todo = []
                for spec in group:
                    problem = self._problem(spec, executor.cluster)
                    if problem is not None:
                        yield failed(spec, problem, crashed=False)
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
        return failed(spec, f"slurm job {job.job_id} failed: {str(err).strip()[-2000:]}")
