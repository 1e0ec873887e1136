"""Why the ShapeProp row collapses under bfloat16 autocast: weight norms and one batch's gradients.

Reads the checkpoints of the precision learning curves (reports/mini/README.md, "bfloat16
autocast"; `runs-curves/precision-shapeprop-{fp32,bf16}/checkpoints/`) and prints

1. the norm of each module group's weights in each checkpoint given;
2. at the first checkpoint, one training batch's gradients in float32 and under bfloat16 autocast,
   and their relative difference per parameter (the RoIs sampled differ between the two passes).

    .venv/bin/python reports/mini/recipe/precision_diagnosis.py \\
        runs-curves/precision-kept/fp32-step1800.ckpt runs-curves/precision-kept/bf16-step1800.ckpt

(the curves' `step_0001800.ckpt`, copied aside: a curve keeps its last two step checkpoints).
"""

import sys

import torch

from harness.plan import select
from harness.suite import expand, load_suite
from shapeprop.data import catalog
from shapeprop.data.loading import make_loader
from shapeprop.models.build import build_detector


def state(path: str) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}


def main() -> None:
    torch.set_num_threads(1)
    for path in sys.argv[1:]:
        groups: dict[str, float] = {}
        for name, value in state(path).items():
            if value.is_floating_point():
                group = ".".join(name.split(".")[:3])
                groups[group] = groups.get(group, 0.0) + float(value.float().norm()) ** 2
        print(path, {g: round(v**0.5, 1) for g, v in sorted(groups.items()) if v > 0})

    cfg = select(expand(load_suite("suites/ablations.yaml"), "mini"), "baseline + ShapePro[p]")[0].config
    data = cfg.data
    train = catalog.load(data.dataset, data.root, "train", **{**data.options, "num_images": 48})
    model = build_detector(
        cfg.model.model_copy(update={"weights": None}),
        len(train.metadata.classes),
        data.min_size,
        data.max_size,
    )
    model.load_state_dict(state(sys.argv[1]))
    model.train()
    loader = make_loader(
        train.records, data.model_copy(update={"num_workers": 0}), True, cfg.schedule.batch_size, 0
    )
    images, targets = next(iter(loader))

    def gradients(bf16: bool) -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = sum(model(images, targets).values())
        loss.backward()
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    full, low = gradients(False), gradients(True)
    for name, g in full.items():
        relative = float((g - low[name]).norm() / (g.norm() + 1e-12))
        print(
            f"{name:70s} |g| float32 {float(g.norm()):.3g} bfloat16 {float(low[name].norm()):.3g} rel. diff {relative:.2f}"
        )


if __name__ == "__main__":
    main()
