"""Benchmark: train-step time and inference time per image, with and without ShapeProp.

Both detectors share every weight they have in common (the ShapeProp model is loaded from the
plain one), see the same synthetic batch and the same RNG state per step, so their RPN and box
head do the same work and the difference is the ShapeProp head and the wider mask-head input. The
two models alternate step by step (drift in machine load hits both) and medians are reported.
Inference keeps every detection (score threshold 0, up to 100 per image), the costly case.

    python -m shapeprop.models.bench --arch mask_rcnn --backbone tiny --size 128 --batch 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from shapeprop.config import DataConfig, ModelConfig, ShapePropConfig
from shapeprop.data import catalog
from shapeprop.data.loading import DetectionDataset, make_loader
from shapeprop.models.build import build_detector, param_counts


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _to(batch, device):
    images, targets = batch
    images = [i.to(device) for i in images]
    targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    return images, targets


def build_pair(
    model_cfg: ModelConfig,
    shapeprop: ShapePropConfig,
    num_classes: int,
    size: int,
    max_size: int,
    rois: int | None = None,
):
    """(plain, with ShapeProp) detectors sharing all common weights; score threshold 0."""
    torch.manual_seed(0)
    plain = build_detector(model_cfg, num_classes, size, max_size, score_thresh=0.0)
    torch.manual_seed(0)
    sp_cfg = model_cfg.model_copy(update={"shapeprop": shapeprop, "shapeprop_rois_per_image": rois})
    with_sp = build_detector(sp_cfg, num_classes, size, max_size, score_thresh=0.0)
    own = with_sp.state_dict()
    shared = {k: v for k, v in plain.state_dict().items() if k in own and own[k].shape == v.shape}
    with_sp.load_state_dict(shared, strict=False)
    return plain, with_sp


def run_benchmark(
    arch: str = "mask_rcnn",
    backbone: str = "tiny",
    size: int = 128,
    max_size: int | None = None,
    batch_size: int = 4,
    steps: int = 20,
    images: int = 20,
    warmup: int = 3,
    device: str | None = None,
    shapeprop: ShapePropConfig | None = None,
    shapeprop_rois_per_image: int | None = None,
    data_root: Path | None = None,
) -> dict[str, float]:
    """Median train-step and per-image inference seconds of both models, and their ratios."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    max_size = max_size or size
    shapeprop = shapeprop or ShapePropConfig()
    with tempfile.TemporaryDirectory() as tmp:
        root = data_root or Path(tmp)
        ds = catalog.load(
            "synthetic", root=root, split="train", num_images=max(batch_size, images), image_size=size
        )
        loader = make_loader(
            ds.records, DataConfig(min_size=size, max_size=max_size, num_workers=0), True, batch_size, 0
        )
        batch = _to(next(iter(loader)), dev)
        eval_set = DetectionDataset(ds.records[:images], size, max_size, hflip=False, train=False)
        eval_images = [eval_set[i][0].to(dev) for i in range(len(eval_set))]
    cfg = ModelConfig(arch=arch, backbone=backbone)
    models = dict(
        zip(
            ("plain", "shapeprop"),
            build_pair(cfg, shapeprop, len(ds.metadata.classes), size, max_size, shapeprop_rois_per_image),
            strict=True,
        )
    )
    optimizers = {
        k: torch.optim.SGD(m.to(dev).parameters(), lr=1e-3, momentum=0.9) for k, m in models.items()
    }
    train_times: dict[str, list[float]] = {k: [] for k in models}
    for step in range(warmup + steps):
        for name, model in models.items():
            model.train()

            def train_step(model=model, name=name, step=step):
                torch.manual_seed(step)
                loss = sum(model(*batch).values())
                optimizers[name].zero_grad()
                loss.backward()
                optimizers[name].step()

            elapsed = _timed(train_step, dev)
            if step >= warmup:
                train_times[name].append(elapsed)
    infer_times: dict[str, list[float]] = {k: [] for k in models}
    with torch.no_grad():
        for model in models.values():
            model.eval()
            for _ in range(warmup):
                model([eval_images[0]])
        for image in eval_images:
            for name, model in models.items():
                infer_times[name].append(_timed(lambda model=model, image=image: model([image]), dev))
    out = {
        "train_s_per_step_plain": statistics.median(train_times["plain"]),
        "train_s_per_step_shapeprop": statistics.median(train_times["shapeprop"]),
        "infer_s_per_img_plain": statistics.median(infer_times["plain"]),
        "infer_s_per_img_shapeprop": statistics.median(infer_times["shapeprop"]),
        "params_plain": param_counts(models["plain"])["total"],
        "params_shapeprop": param_counts(models["shapeprop"])["total"],
    }
    out["train_ratio"] = out["train_s_per_step_shapeprop"] / out["train_s_per_step_plain"]
    out["infer_ratio"] = out["infer_s_per_img_shapeprop"] / out["infer_s_per_img_plain"]
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Command line: print both timings and the ShapeProp / plain ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="mask_rcnn", choices=["mask_rcnn", "retinamask"])
    p.add_argument("--backbone", default="tiny", choices=["tiny", "resnet18", "resnet50", "resnet101"])
    p.add_argument("--size", type=int, default=128, help="image short side (synthetic images are square)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=20, help="timed training steps per model")
    p.add_argument("--images", type=int, default=20, help="timed inference images per model")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--shapeprop-rois", type=int, default=None, help="model.shapeprop_rois_per_image (default: all)"
    )
    p.add_argument("--saliency-layers", type=int, default=None, help="ShapePropConfig.saliency_layers")
    p.add_argument("--weight-layers", type=int, default=None, help="ShapePropConfig.weight_layers")
    p.add_argument("--hidden", type=int, default=None, help="ShapePropConfig.hidden_channels")
    args = p.parse_args(argv)
    overrides = {
        k: v
        for k, v in (
            ("saliency_layers", args.saliency_layers),
            ("weight_layers", args.weight_layers),
            ("hidden_channels", args.hidden),
        )
        if v is not None
    }
    r = run_benchmark(
        args.arch,
        args.backbone,
        args.size,
        None,
        args.batch,
        args.steps,
        args.images,
        args.warmup,
        args.device,
        shapeprop=ShapePropConfig(**overrides),
        shapeprop_rois_per_image=args.shapeprop_rois,
    )
    print(
        f"{args.arch} / {args.backbone}, {args.size}px, batch {args.batch}, device {args.device or 'auto'}, "
        f"ShapeProp {overrides or 'defaults'}, RoIs/image {args.shapeprop_rois or 'all'}"
    )
    print(f"{'':>12} {'plain':>10} {'shapeprop':>10} {'ratio':>8}")
    print(
        f"{'train s/step':>12} {r['train_s_per_step_plain']:>10.4f} {r['train_s_per_step_shapeprop']:>10.4f} {r['train_ratio']:>8.3f}"
    )
    print(
        f"{'infer s/img':>12} {r['infer_s_per_img_plain']:>10.4f} {r['infer_s_per_img_shapeprop']:>10.4f} {r['infer_ratio']:>8.3f}"
    )
    print(f"{'params':>12} {r['params_plain']:>10d} {r['params_shapeprop']:>10d}")
    return r


if __name__ == "__main__":
    main()
