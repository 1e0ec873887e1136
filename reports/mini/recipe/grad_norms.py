"""The global gradient norm of every training step of one suite run (before any clipping).

Why Fig. 6's and Table 3's mini profiles clip at 10 (reports/mini/README.md, "Gradient clipping"):
Fig. 6's ShapeProp row at 1/100 of the data, seed 1, diverges (NaN at step 93) after its norms
spike, while a healthy seed's stay around 3-7. Trains `--steps` steps of the run the arguments
select (as `tools/learning_curve.py`: suite, --only, --seed, --axis, --set; constant LR after the
warm-up) into a temporary folder, prints the norm every 10 steps and of every step above
`--above`, and at the end the median, the 90th percentile, the maximum and how many steps exceed
`--above`. No split is evaluated: the run stops before its evaluation.

    .venv/bin/python reports/mini/recipe/grad_norms.py suites/fractions.yaml \\
        --only 'Mask R-CNN w/ ShapeProp' --axis data.data_fraction=0.01 --seed 1 \\
        --set schedule.clip_grad_norm=null --steps 150
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


class StopBeforeEvaluation(Exception):
    pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("suite")
    p.add_argument("--only", required=True)
    p.add_argument("--profile", default="mini")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--axis", dest="axes", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--above", type=float, default=10.0)
    args = p.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

    import torch
    from learning_curve import config_of

    from shapeprop.config import ExperimentConfig
    from shapeprop.engine.module import DetectorModule, NonFiniteLossError
    from shapeprop.experiment import run_experiment

    torch.set_num_threads(1)
    norms: list[float] = []

    def record(module: DetectorModule, optimizer) -> None:  # Lightning calls it before clipping
        grads = [q.grad.detach().float().norm() for q in module.parameters() if q.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack(grads)))
        norms.append(norm)
        if module.global_step % 10 == 0 or not norm <= args.above:
            print(f"step {module.global_step}: {norm:.2f}", flush=True)
        if module.global_step + 1 == args.steps:
            raise StopBeforeEvaluation

    DetectorModule.on_before_optimizer_step = record
    cfg = config_of(args.suite, args.only, args.profile, args.seed, args.sets, args.axes)
    cfg["schedule"]["max_steps"] = args.steps + 1  # the hook stops it after `steps` steps
    with tempfile.TemporaryDirectory() as workdir:
        try:
            run_experiment(ExperimentConfig(**cfg), Path(workdir), progress=False)
        except StopBeforeEvaluation:
            pass
        except NonFiniteLossError as error:
            print(f"diverged: {error}")
    finite = sorted(n for n in norms if math.isfinite(n))
    print(
        f"{len(norms)} steps: median {statistics.median(finite):.2f}, 90th percentile "
        f"{finite[int(0.9 * len(finite))]:.2f}, max {max(norms):.2f}, "
        f"{sum(not n <= args.above for n in norms)} above {args.above:g}"
    )


if __name__ == "__main__":
    main()
