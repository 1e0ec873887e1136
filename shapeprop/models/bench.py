"""Benchmark: train-step time and inference time per image, with and without ShapeProp.

Both detectors share every weight they have in common (the ShapeProp model is loaded from the
plain one), see the same synthetic batch and the same RNG state per step, so their RPN and box
head do the same work and the difference is the ShapeProp head and the wider mask-head input. The
two models alternate step by step (drift in machine load hits both) and medians are reported.
Inference keeps every detection (score threshold 0, up to 100 per image), the costly case.

`--count` also counts, for one training step of each model (forward, backward, optimizer step),
the operators dispatched and the ones that synchronise the host with a CUDA device
(`shapeprop.models.op_counts`). `--profile` prints
torch.profiler's busiest operators of one step of each model.

`--compile MODE` / `--channels-last` add a "fast" copy of both models (`model.compile`,
`model.channels_last`, same weights) that trains and infers interleaved with the eager ones:
before and after in one run. Its first step (compilation included) is reported apart.
`--roofline` gives each model's training step as a roofline (`shapeprop.models.roofline`): FLOPs counted,
the fraction of the machine's matmul peak the step reaches, and
where its time goes (torch.profiler: operators with FLOPs, other operators, outside operators).

    python -m shapeprop.models.bench --arch mask_rcnn --backbone tiny --size 128 --batch 4
    python -m shapeprop.models.bench --count --steps 0 --images 0
    python -m shapeprop.models.bench --size 160 --batch 4 --preset light --hidden 16 --compile default --roofline
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from shapeprop.config import DataConfig, ModelConfig, ShapePropConfig
from shapeprop.data import catalog
from shapeprop.data.loading import DetectionDataset, make_loader
from shapeprop.models.build import build_detector
from shapeprop.models.compile import MODES
from shapeprop.models.detectors import DETECTORS
from shapeprop.models.op_counts import count_ops, format_counts
from shapeprop.models.params import param_counts
from shapeprop.models.recipes import BACKBONES
from shapeprop.models.roofline import format_roofline, matmul_peaks, step_roofline
from shapeprop.timing import synchronize, timed

PRECISIONS = {"32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


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
    fast: dict[str, Any] | None = None,
):
    """(plain, with ShapeProp) detectors sharing all common weights; score threshold 0. With `fast`
    (ModelConfig updates, e.g. compile) also their fast copies: (plain, with ShapeProp, plain fast,
    with ShapeProp fast), each fast one with its eager twin's weights."""
    torch.manual_seed(0)
    plain = build_detector(model_cfg, num_classes, size, max_size, score_thresh=0.0)
    torch.manual_seed(0)
    sp_cfg = model_cfg.model_copy(update={"shapeprop": shapeprop, "shapeprop_rois_per_image": rois})
    with_sp = build_detector(sp_cfg, num_classes, size, max_size, score_thresh=0.0)
    own = with_sp.state_dict()
    shared = {k: v for k, v in plain.state_dict().items() if k in own and own[k].shape == v.shape}
    with_sp.load_state_dict(shared, strict=False)
    if not fast:
        return plain, with_sp
    twins = []
    for cfg, eager in ((model_cfg, plain), (sp_cfg, with_sp)):
        twin = build_detector(cfg.model_copy(update=fast), num_classes, size, max_size, score_thresh=0.0)
        twin.load_state_dict(eager.state_dict())
        twins.append(twin)
    return plain, with_sp, *twins


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
    precision: str = "32",
    count: bool = False,
    profile: bool = False,
    compile: str = "none",
    channels_last: bool = False,
    roofline: bool = False,
) -> dict[str, Any]:
    """Median train-step and per-image inference seconds of both models, and their ratios.

    Training is timed twice over the same `steps` (see below): `train_*` is the second, warm pass,
    `train_*_cold` the first.

    `precision` "16-mixed" / "bf16-mixed" runs both under autocast (and a grad scaler for float16),
    as Lightning's AMP does. With `count`, `ops_*` / `syncs_*` (and on CUDA `cuda_syncs_*`) give one
    training step's counts and `counts` the `OpCount` of each model. With `profile`, `profiles` holds
    torch.profiler's tables of one training step and one inference call of each model. `steps` or `images` 0 skip the timing.
    With `compile` (a `model.compile` mode) or `channels_last`, "plain fast" and "shapeprop fast"
    run beside them, and `first_step_s_*` holds every model's first training step (compilation).
    With `roofline`, `roofline` holds `step_roofline` of each eager model and `peaks` the machine's.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp_dtype = PRECISIONS[precision]
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
    fast = {
        k: v for k, v in (("compile", compile), ("channels_last", channels_last)) if v not in ("none", False)
    }
    names = ("plain", "shapeprop", "plain fast", "shapeprop fast") if fast else ("plain", "shapeprop")
    pair = build_pair(
        cfg, shapeprop, len(ds.metadata.classes), size, max_size, shapeprop_rois_per_image, fast
    )
    models = dict(zip(names, pair, strict=True))
    optimizers = {
        k: torch.optim.SGD(m.to(dev).parameters(), lr=1e-3, momentum=0.9) for k, m in models.items()
    }
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)

    def autocast():
        return torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    def train_step(name: str, step: int) -> None:
        model = models[name].train()
        torch.manual_seed(step)
        with autocast():
            loss = sum(model(*batch).values())
        optimizers[name].zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizers[name])
        scaler.update()

    out: dict[str, Any] = {
        "params_plain": param_counts(models["plain"])["total"],
        "params_shapeprop": param_counts(models["shapeprop"])["total"],
    }
    for step in range(warmup):  # also what count/profile see: caches filled, kernels chosen
        for name in models:
            seconds = timed(lambda name=name, step=step: train_step(name, step), dev)
            if step == 0:
                out[f"first_step_s_{name}"] = seconds
    if count:
        out["counts"] = {name: count_ops(lambda name=name: train_step(name, 0), dev) for name in models}
        for name, c in out["counts"].items():
            out[f"ops_{name}"], out[f"syncs_{name}"] = c.total_ops, c.total_syncs
            if c.cuda_syncs is not None:
                out[f"cuda_syncs_{name}"] = c.cuda_syncs
    if profile:
        out["profiles"] = {
            f"{name}: one training step": _profile(lambda name=name: train_step(name, 0), dev)
            for name in models
        }
    if roofline:
        out["peaks"] = matmul_peaks(dev)
        out["roofline"] = {  # of the eager models: counting under a dispatch mode would recompile the others
            name: step_roofline(lambda name=name: train_step(name, 0), dev, out["peaks"])
            for name in models
            if "fast" not in name
        }
        for name, entry in out["roofline"].items():
            entry["ops"] = count_ops(lambda name=name: train_step(name, 0), dev).total_ops
    if steps:
        # Two passes over the same steps. The first (cold) meets each step's RoI counts for the first
        # time, and cuDNN / oneDNN build kernels for the new shapes; the second (warm) is the steady
        # state of a long run, whose caches hold every count after its first few hundred steps.
        for suffix in ("_cold", ""):
            times: dict[str, list[float]] = {k: [] for k in models}
            for step in range(steps):
                for name in models:
                    times[name].append(timed(lambda name=name, step=step: train_step(name, step), dev))
            for name in models:
                out[f"train_s_per_step_{name}{suffix}"] = statistics.median(times[name])
            for tag in ("", " fast") if fast else ("",):
                out[f"train_ratio{tag}{suffix}"] = (
                    out[f"train_s_per_step_shapeprop{tag}{suffix}"]
                    / out[f"train_s_per_step_plain{tag}{suffix}"]
                )
                out[f"train_ratio_quartiles{tag}{suffix}"] = _quartiles(
                    times[f"shapeprop{tag}"], times[f"plain{tag}"]
                )
    if eval_images:
        infer_times: dict[str, list[float]] = {k: [] for k in models}
        with torch.no_grad(), autocast():
            for model in models.values():
                model.eval()
                for _ in range(warmup):
                    model([eval_images[0]])
            for image in eval_images:
                for name, model in models.items():
                    infer_times[name].append(timed(lambda model=model, image=image: model([image]), dev))
            if profile:
                for name, model in models.items():
                    out["profiles"][f"{name}: inference, one image"] = _profile(
                        lambda model=model: model([eval_images[0]]), dev
                    )
        for name in models:
            out[f"infer_s_per_img_{name}"] = statistics.median(infer_times[name])
        for tag in ("", " fast") if fast else ("",):
            out[f"infer_ratio{tag}"] = (
                out[f"infer_s_per_img_shapeprop{tag}"] / out[f"infer_s_per_img_plain{tag}"]
            )
            out[f"infer_ratio_quartiles{tag}"] = _quartiles(
                infer_times[f"shapeprop{tag}"], infer_times[f"plain{tag}"]
            )
    return out


def _quartiles(shapeprop: list[float], plain: list[float]) -> tuple[float, float]:
    """First and third quartiles of the paired (same step or image) ShapeProp / plain time ratios:
    the spread behind a ratio of medians."""
    ratios = [a / b for a, b in zip(shapeprop, plain, strict=True)]
    if len(ratios) < 2:
        return ratios[0], ratios[0]
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return q1, q3


def _profile(fn: Callable[[], Any], device: torch.device, rows: int = 25) -> str:
    """torch.profiler's table of the operators with the most self time (device time on CUDA)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: print both timings and the ShapeProp / plain ratios (and counts, profiles)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="mask_rcnn", choices=DETECTORS.names())
    p.add_argument("--backbone", default="tiny", choices=BACKBONES.names())
    p.add_argument("--size", type=int, default=128, help="image short side (synthetic images are square)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=20, help="timed training steps per model (0: no timing)")
    p.add_argument("--images", type=int, default=20, help="timed inference images per model (0: none)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--precision", default="32", choices=list(PRECISIONS), help="AMP as in schedule.precision")
    p.add_argument(
        "--shapeprop-rois", type=int, default=None, help="model.shapeprop_rois_per_image (default: all)"
    )
    p.add_argument(
        "--preset", default="official", choices=["official", "light"], help="ShapePropConfig.preset"
    )
    p.add_argument("--saliency-layers", type=int, default=None, help="ShapePropConfig.saliency_layers")
    p.add_argument("--weight-layers", type=int, default=None, help="ShapePropConfig.weight_layers")
    p.add_argument("--hidden", type=int, default=None, help="ShapePropConfig.hidden_channels")
    p.add_argument("--count", action="store_true", help="count operators and syncs of one training step")
    p.add_argument("--profile", action="store_true", help="print torch.profiler's table of one step")
    p.add_argument(
        "--compile", default="none", choices=["none", *MODES], help="add models with this model.compile"
    )
    p.add_argument("--channels-last", action="store_true", help="add models with model.channels_last")
    p.add_argument("--roofline", action="store_true", help="FLOPs, fraction of peak, where the time goes")
    p.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's]")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
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
        shapeprop=ShapePropConfig(preset=args.preset, **overrides),
        shapeprop_rois_per_image=args.shapeprop_rois,
        precision=args.precision,
        count=args.count,
        profile=args.profile,
        compile=args.compile,
        channels_last=args.channels_last,
        roofline=args.roofline,
    )
    print(
        f"{args.arch} / {args.backbone}, {args.size}px, batch {args.batch}, device {args.device or 'auto'}, "
        f"precision {args.precision}, ShapeProp {args.preset} {overrides or ''}, RoIs/image {args.shapeprop_rois or 'all'}, "
        f"{torch.get_num_threads()} threads; fast = compile {args.compile}, channels_last {args.channels_last}"
    )
    print(f"{'':>12} {'plain':>10} {'shapeprop':>10} {'ratio':>8}   quartiles of per-step ratios")
    for label, key, suffix in (
        ("train s/step", "train_s_per_step", ""),
        ("(cold pass)", "train_s_per_step", "_cold"),
        ("infer s/img", "infer_s_per_img", ""),
    ):
        ratio = ("train_ratio" if key.startswith("train") else "infer_ratio") + suffix
        if ratio in r:
            plain, sp = r[f"{key}_plain{suffix}"], r[f"{key}_shapeprop{suffix}"]
            q1, q3 = r[ratio.replace("_ratio", "_ratio_quartiles")]
            print(f"{label:>12} {plain:>10.4f} {sp:>10.4f} {r[ratio]:>8.3f}   paired {q1:.3f} to {q3:.3f}")
        fast_ratio = ratio.replace("_ratio", "_ratio fast")
        if fast_ratio in r:
            plain, sp = r[f"{key}_plain fast{suffix}"], r[f"{key}_shapeprop fast{suffix}"]
            q1, q3 = r[fast_ratio.replace("_ratio", "_ratio_quartiles")]
            print(
                f"{'  fast':>12} {plain:>10.4f} {sp:>10.4f} {r[fast_ratio]:>8.3f}   paired {q1:.3f} to {q3:.3f}"
            )
    if "first_step_s_plain" in r:
        print(
            f"{'first step s':>12} "
            + ", ".join(
                f"{k.removeprefix('first_step_s_')} {v:.2f}"
                for k, v in r.items()
                if k.startswith("first_step_s_")
            )
        )
    print(f"{'params':>12} {r['params_plain']:>10d} {r['params_shapeprop']:>10d}")
    if args.count:
        print(format_counts(r["counts"]))
    if args.roofline:
        print(format_roofline(r))
    for name, table in r.get("profiles", {}).items():
        print(f"\n{name}\n{table}")
    return r


if __name__ == "__main__":
    main()
