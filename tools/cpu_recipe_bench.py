"""The CPU miniature's training step, eager (today's code path) and faster, side by side in one run.

"eager" is the `mini` profile of a suite as committed (its rows without and with ShapeProp);
"before" is the same with the FPN pooler of git revision `--before` (default main: the code path
before issue 45, whose eager change is the pooler's; loaded from `git show`, left out when git
cannot show it); "channels-last" adds `model.channels_last`; "compiled" adds `model.compile` (default mode) to it
(`--compile none` leaves it out). The models start from the same weights and train in turn, one
step each, on the same synthetic batches and RNG state, in the profile's precision, so a change in
machine load hits all of them; medians over the timed steps. A compiled model's first step
compiles it: "first step" is reported, and "run of N steps" (first step + N - 1 medians, N the
profile's `schedule.max_steps`) counts it in. Weights start random (the timing does not depend on
them). The tables before 2026-12 in docs/cpu-recipe-benchmark.md compared recipes instead.

    .venv/bin/python tools/cpu_recipe_bench.py --threads 2
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default=str(ROOT / "suites" / "ablations.yaml"))
    p.add_argument("--plain", default="baselin[e]", help="row without ShapeProp (a `run --only` filter)")
    p.add_argument("--shapeprop", default="baseline + ShapePro[p]", help="row with ShapeProp")
    p.add_argument("--steps", type=int, default=20, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (the first compiles)")
    p.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's]")
    p.add_argument(
        "--compile", default="default", help="model.compile of the compiled stage ('none': no such stage)"
    )
    p.add_argument(
        "--roofline", action="store_true", help="also each eager step's roofline (docs/roofline.md)"
    )
    p.add_argument(
        "--before",
        default="c556b46",  # main before issue 45's pooler
        help="git revision whose pooler the 'before' stage runs [default: c556b46, before issue 45] ('': none)",
    )
    p.add_argument(
        "--saliency-autocast",
        action="store_true",
        help="add a stage with model.shapeprop.saliency_autocast (the saliency learner in bfloat16; "
        "not the default: other numbers)",
    )
    p.add_argument(
        "--cpu-time",
        action="store_true",
        help="time steps in this process's CPU seconds, not wall seconds: on a machine others load, "
        "the work without the waits for a core (use with --threads 1)",
    )
    p.add_argument("--out", type=Path, default=None, help="also write the table here (Markdown)")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))

    import torch

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
    old_pooler = _pooler_of(args.before) if args.before else None
    stages = {"before": {}} if old_pooler else {}
    stages |= {"eager": {}, "channels-last": {"channels_last": True}}
    if args.saliency_autocast:  # not the default: it changes the numbers (model.shapeprop.saliency_autocast)
        stages["saliency-bf16"] = {"shapeprop": {"saliency_autocast": True}}
    if args.compile != "none":
        stages["compiled"] = {"channels_last": True, "compile": args.compile}

    weights = {}

    def build(name, cfg, update):
        sections = {k: v for k, v in update.items() if isinstance(v, dict)}  # e.g. {"shapeprop": {...}}
        model_cfg = cfg.model.model_copy(update={"weights": None, **update} | dict.fromkeys(sections, None))
        for section, values in sections.items():
            part = getattr(cfg.model, section)
            model_cfg = model_cfg.model_copy(update={section: part and part.model_copy(update=values)})
        torch.manual_seed(0)
        model = build_detector(model_cfg, len(train.metadata.classes), data.min_size, data.max_size)
        model.load_state_dict(weights.setdefault(name, model.state_dict()))
        model.train()
        params = [q for q in model.parameters() if q.requires_grad]
        return model, torch.optim.SGD(params, lr=0.01, momentum=0.9)

    models = {
        (when, name): build(name, cfg, update)
        for when, update in stages.items()
        for name, cfg in cfgs.items()
    }
    for (when, _), (model, _) in models.items():
        if when == "before":  # the pooler modules only: their subclass overrides forward alone
            for module in model.modules():
                if isinstance(module, MultiScaleRoIAlign):
                    module.__class__ = old_pooler
    precision = cfgs["plain"].schedule.precision
    batch = cfgs["plain"].schedule.batch_size
    loader = make_loader(train.records, data.model_copy(update={"num_workers": 0}), True, batch, 0)
    batches = [b for _, b in zip(range(8), loader, strict=False)]
    times: dict[tuple[str, str], list[float]] = {key: [] for key in models}
    first: dict[tuple[str, str], float] = {}

    def train_step(key, step: int) -> None:
        model, optimizer = models[key]
        images, targets = batches[step % len(batches)]
        torch.manual_seed(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = sum(model(images, targets).values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    clock = time.process_time if args.cpu_time else time.perf_counter
    for step in range(args.warmup + args.steps):
        for key in models:
            start, wall = clock(), time.perf_counter()
            train_step(key, step)
            seconds = clock() - start
            if step == 0:  # in wall seconds: compilation runs in worker processes too
                first[key] = time.perf_counter() - wall
            if step >= args.warmup:
                times[key].append(seconds)
    median = {key: statistics.median(values) for key, values in times.items()}
    run_steps = cfgs["plain"].schedule.max_steps
    lines = [
        f"Training step of the tiny detector, mini profile of `{Path(args.suite).name}` ({data.min_size} px, "
        f"batch {batch}), {torch.get_num_threads()} torch threads, precision {precision}, median of "
        f"{args.steps} steps after {args.warmup}{', in CPU seconds' if args.cpu_time else ''} "
        f"(`{' '.join(['tools/cpu_recipe_bench.py', *sys.argv[1:]])}`; "
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__})",
        "",
        f"| stage | plain (s/step) | shapeprop (s/step) | ShapeProp ratio | speed-up (shapeprop, over {next(iter(stages))}) "
        f"| first step plain / shapeprop (s) | run of {run_steps} steps, shapeprop (min) |",
        "| --- " * 7 + "|",
    ]
    for when in stages:
        plain, sp = median[(when, "plain")], median[(when, "shapeprop")]
        run = (first[(when, "shapeprop")] + (run_steps - 1) * sp) / 60
        lines.append(
            f"| {when} | {plain:.4f} | {sp:.4f} | {sp / plain:.2f}x | {median[(next(iter(stages)), 'shapeprop')] / sp:.2f}x "
            f"| {first[(when, 'plain')]:.1f} / {first[(when, 'shapeprop')]:.1f} | {run:.1f} |"
        )
    if args.roofline:
        from shapeprop.models.op_counts import count_ops
        from shapeprop.models.roofline import format_roofline, matmul_peaks, step_roofline

        cpu = torch.device("cpu")
        r = {"peaks": matmul_peaks(cpu), "roofline": {}}
        for name in cfgs:
            step = lambda name=name: train_step(("eager", name), 0)  # noqa: E731
            r["roofline"][name] = {
                **step_roofline(step, cpu, r["peaks"]),
                "ops": count_ops(step, cpu).total_ops,
            }
        lines += [
            "",
            "Roofline of the eager steps (`shapeprop.models.roofline`):",
            "",
            "```",
            format_roofline(r),
            "```",
        ]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)


def _pooler_of(rev: str):
    """`MultiScaleRoIAlign` of `shapeprop/ops/roi_align.py` at git revision `rev`, or None."""
    import subprocess
    import types

    shown = subprocess.run(
        ["git", "show", f"{rev}:shapeprop/ops/roi_align.py"], cwd=ROOT, capture_output=True, text=True
    )
    if shown.returncode != 0:
        print(f"no 'before' stage: git cannot show {rev}'s pooler ({shown.stderr.strip()})")
        return None
    module = types.ModuleType(f"roi_align_at_{rev}")
    exec(compile(shown.stdout, f"{rev}:shapeprop/ops/roi_align.py", "exec"), module.__dict__)
    return module.MultiScaleRoIAlign


if __name__ == "__main__":
    main()
