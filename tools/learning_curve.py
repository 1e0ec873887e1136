"""Learning curves on the synthetic *test* split: box AP, mask AP and IoU@GT against training steps.

Trains one run of a suite (profile `mini` by default) at a constant LR after its warm-up (no
decay) and evaluates it on the **test** split every `--every` steps up to `--steps`. Each point
resumes the training of the one before: the sampler and the LR depend on the step alone, so the
points lie on one uninterrupted run. The curves choose the mini schedules (the step at which box
AP stops rising); the reported split, val, is never looked at here.

Writes `<out>/<name>.csv` (one line per point, appended as each ends: a stopped curve resumes)
and `<out>/<name>.png`. Example (the commands behind reports/mini/curves/ are in its README):

    .venv/bin/python tools/learning_curve.py suites/ablations.yaml --only "baseline" \\
        --steps 1500 --every 150 --out reports/mini/curves --name ablations-baseline
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["step", "bbox_AP", "segm_AP", "gtbox_mask_iou", "train_s_per_step", "wall_s"]


def config_of(
    suite_path: str, only: str, profile: str, seed: int, sets: list[str], axes: Sequence[str] = ()
) -> dict:
    """The resolved config of the one run `only`, `seed` and the `axes` values select, evaluated on
    the test split."""
    from harness.plan import select
    from harness.suite import expand, load_suite, parse_overrides

    specs = [s for s in select(expand(load_suite(suite_path), profile, parse_overrides(sets)), only)]
    wanted = parse_overrides(list(axes))  # {"data.data_fraction": 0.01}: the same syntax as --set
    specs = [
        s for s in specs if s.seed == seed and all(k in s.axes and s.axes[k] == v for k, v in wanted.items())
    ]
    if len(specs) != 1:
        runs = sorted(s.describe() for s in specs) or "none"
        sys.exit(
            f"--only {only!r} with seed {seed} and axes {axes or 'any'} must select exactly one run of "
            f"{suite_path}; got {runs}"
        )
    cfg = specs[0].config.model_dump(mode="json")
    cfg["data"]["test_split"] = "test"
    cfg["schedule"]["milestones"] = []  # constant LR after warm-up: the curve shows where it stops rising
    cfg["eval"]["timing"] = False
    return cfg


def plot(rows: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [int(r["step"]) for r in rows]
    for key, label in (("bbox_AP", "box AP"), ("segm_AP", "mask AP"), ("gtbox_mask_iou", "IoU@GT")):
        ax.plot(steps, [float(r[key]) for r in rows], marker="o", label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("synthetic test split (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plateau_step(rows: list[dict], late_points: int = 6, within: float = 0.10) -> int | None:
    """First step whose box AP is within `within` (relative) of the mean of the last `late_points`.

    The rule behind the mini schedules (reports/mini/curves/README.md); None for a curve too short
    to have a late part."""
    rows = sorted(rows, key=lambda r: int(r["step"]))
    if len(rows) < 2 * late_points:
        return None
    late = sum(float(r["bbox_AP"]) for r in rows[-late_points:]) / late_points
    return next(int(r["step"]) for r in rows if float(r["bbox_AP"]) >= (1 - within) * late)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("suite")
    p.add_argument("--only", required=True, help="the row (a filter as `run --only`)")
    p.add_argument("--profile", default="mini")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--axis",
        dest="axes",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the run's value on one of the suite's axes (e.g. data.data_fraction=0.01); repeatable",
    )
    p.add_argument("--steps", type=int, required=True, help="last point")
    p.add_argument("--every", type=int, required=True, help="steps between points")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "mini" / "curves")
    p.add_argument("--name", required=True, help="file name of the CSV and PNG")
    p.add_argument("--workdir", type=Path, default=None, help="[default: runs-curves/<name>]")
    p.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's]")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))

    import torch

    from shapeprop.config import ExperimentConfig
    from shapeprop.experiment import run_experiment

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_of(args.suite, args.only, args.profile, args.seed, args.sets, args.axes)
    cfg["schedule"]["checkpoint_every"] = args.every  # only where the curve has points
    workdir = args.workdir or ROOT / "runs-curves" / args.name
    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / f"{args.name}.csv"
    rows = list(csv.DictReader(table.open())) if table.exists() else []
    done = {int(r["step"]) for r in rows}
    if not table.exists():
        table.write_text(",".join(COLUMNS) + "\n")
    for step in range(args.every, args.steps + 1, args.every):
        if step in done:
            continue
        cfg["schedule"]["max_steps"] = step
        start = time.monotonic()
        metrics = run_experiment(ExperimentConfig(**cfg), workdir, progress=False).metrics
        row = {"step": step, "wall_s": round(time.monotonic() - start, 1)}
        row.update({k: round(float(metrics[k]), 3) for k in COLUMNS if k in metrics})
        rows.append({k: str(v) for k, v in row.items()})
        with table.open("a") as f:
            f.write(",".join(str(row.get(k, "")) for k in COLUMNS) + "\n")
        print(args.name, row, flush=True)
    title = f"{Path(args.suite).stem} / {args.only} ({args.profile}, seed {args.seed}) {' '.join(args.axes + args.sets)}"
    plot(sorted(rows, key=lambda r: int(r["step"])), title, args.out / f"{args.name}.png")
    print(
        f"{args.name}: box AP plateau (within 10 % of the last 6 points' mean) from step {plateau_step(rows)}"
    )


if __name__ == "__main__":
    main()
