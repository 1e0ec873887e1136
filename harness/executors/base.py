"""What every executor shares: how a run ended, the shape of a run, the DDP rank variables, and
the inline executor."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

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


def failed(spec: RunSpec, error: str, crashed: bool = True) -> RunOutcome:
    return RunOutcome(spec.key, spec.row, "FAILED", error=error, crashed=crashed)


class InlineExecutor:
    """Runs each spec in this process, in order."""

    name = "inline"

    def run(self, specs: Sequence[RunSpec], job: Job) -> Iterator[RunOutcome]:
        for spec in specs:
            try:
                yield job(spec)
            except Exception as err:  # the job records its own failures; this is the store failing
                yield failed(spec, f"{type(err).__name__}: {err}")


def run_shape(spec: RunSpec) -> tuple[int, int]:
    """(num_nodes, devices) of a run: the machines and the GPUs (processes) per machine it takes."""
    schedule = spec.config.schedule
    return schedule.num_nodes, schedule.devices


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """What makes a process rank `rank` of a DDP job of `world` processes on this machine
    (torch.distributed's variables: Lightning then takes the processes as started outside it, and
    `shapeprop.engine.launch.launched_rank` tells the harness which one is rank 0)."""
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "NODE_RANK": "0",
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
