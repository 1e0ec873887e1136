"""The CPU miniature's training step, before and after the faster recipe, side by side in one run.

"after" is the `mini` profile of a suite as committed (its rows without and with ShapeProp);
"before" is the same with the recipe the miniatures had until 2026-11-26: torchvision's RoIAlign
(`shapeprop.ops.roi_align` replaced it), the tiny backbone recipe's sizes (no `model.sizes`), a
ShapeProp head on 64 training RoIs per image at width 32, and float32. A profile in bf16-mixed
runs "after" under bfloat16 autocast, as Lightning does, and adds "after, float32" (the same in
float32) to separate the precision's share. The models train in turn, one step each, on the same
synthetic batches and RNG state, so a change in machine load hits all of them; medians over the
timed steps. Weights start random (the timing does not depend on them).

    .venv/bin/python tools/cpu_recipe_bench.py --out docs/cpu-recipe-benchmark.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = {"sizes": None, "shapeprop_rois_per_image": 64}
BEFORE_HEAD = {"hidden_channels": 32}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default=str(ROOT / "suites" / "ablations.yaml"))
    p.add_argument("--plain", default="baselin[e]", help="row without ShapeProp (a `run --only` filter)")
    p.add_argument("--shapeprop", default="baseline + ShapePro[p]", help="row with ShapeProp")
    p.add_argument("--steps", type=int, default=20, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's]")
    p.add_argument("--out", type=Path, default=None, help="also write the table here (Markdown)")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))

    import torch
    import torchvision

    from harness.plan import select
    from harness.suite import expand, load_suite
    from shapeprop.data import catalog
    from shapeprop.data.loading import make_loader
    from shapeprop.models.build import build_detector
    from shapeprop.ops.roi_align import MultiScaleRoIAlign

    if args.threads:
        torch.set_num_threads(args.threads)
    specs = expand(load_suite(args.suite), "mini")
    cfgs = {
        name: select(specs, only)[0].config
        for name, only in (("plain", args.plain), ("shapeprop", args.shapeprop))
    }
    data = cfgs["plain"].data
    train = catalog.load(data.dataset, data.root, "train", **{**data.options, "num_images": 48})

    def build(cfg, before: bool):
        model_cfg = cfg.model.model_copy(update={"weights": None})
        if before:
            head = model_cfg.shapeprop and model_cfg.shapeprop.model_copy(update=BEFORE_HEAD)
            model_cfg = model_cfg.model_copy(update={**BEFORE, "shapeprop": head})
        torch.manual_seed(0)
        model = build_detector(model_cfg, len(train.metadata.classes), data.min_size, data.max_size)
        if before:  # the subclass only overrides forward: torchvision's own pooler again
            for module in model.modules():
                if isinstance(module, MultiScaleRoIAlign):
                    module.__class__ = torchvision.ops.MultiScaleRoIAlign
        model.train()
        params = [q for q in model.parameters() if q.requires_grad]
        return model, torch.optim.SGD(params, lr=0.01, momentum=0.9)

    precision = cfgs["plain"].schedule.precision
    stages = ("before", "after, float32", "after") if precision == "bf16-mixed" else ("before", "after")
    models = {(when, name): build(cfg, when == "before") for when in stages for name, cfg in cfgs.items()}
    batch = cfgs["plain"].schedule.batch_size
    loader = make_loader(train.records, data.model_copy(update={"num_workers": 0}), True, batch, 0)
    batches = [b for _, b in zip(range(8), loader, strict=False)]
    times: dict[tuple[str, str], list[float]] = {key: [] for key in models}
    for step in range(args.warmup + args.steps):
        for key, (model, optimizer) in models.items():
            images, targets = batches[step % len(batches)]
            torch.manual_seed(step)
            bf16 = key[0] == "after" and precision == "bf16-mixed"
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = sum(model(images, targets).values())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= args.warmup:
                times[key].append(time.perf_counter() - start)
    median = {key: statistics.median(values) for key, values in times.items()}
    lines = [
        f"Training step of the tiny detector, mini profile of `{Path(args.suite).name}` ({data.min_size} px, "
        f'batch {batch}), {torch.get_num_threads()} torch threads, "after" in precision '
        f"{precision}, median of {args.steps} steps "
        f"(`{' '.join(['tools/cpu_recipe_bench.py', *sys.argv[1:]])}`; "
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__})",
        "",
        "| model | " + " | ".join(f"{when} (s/step)" for when in stages) + " | speed-up |",
        "| --- " * (len(stages) + 2) + "|",
    ]
    for name in cfgs:
        cells = " | ".join(f"{median[(when, name)]:.3f}" for when in stages)
        lines.append(f"| {name} | {cells} | {median[('before', name)] / median[('after', name)]:.2f}x |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
