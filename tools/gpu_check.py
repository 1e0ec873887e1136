"""The GPU acceptance check (`make gpu-check`): everything a GPU must show, in one Markdown report.

Runs on any one-GPU machine with the project's sources and a CUDA PyTorch, also one whose torch is
not the pinned one and that lacks the harness's packages (it needs pydantic, PyYAML, pycocotools
and pytest; without mlflow the demo rows go through `run_experiment` directly). In order:

1. build the operator for the GPU present (`setup.py build_ext --inplace`, its compute capability);
2. `pytest -m gpu` on the test modules that hold GPU tests;
3. the operator benchmark against the unfold reference, N = 64 to 8192;
4. the detector overhead benchmark: Mask R-CNN and RetinaMask, R-50-FPN, 800 px, batch 2, with and
   without each ShapeProp head preset, with per-step operator and sync counts;
5. the demo rows (`suites/demo.yaml`, mini profile) trained and evaluated on the GPU;
6. speed: the Mask R-CNN step as a roofline (FLOPs, fraction of the matmul peak, where the time
   goes), eager against `model.compile` ("default", "reduce-overhead": CUDA graphs) side by side,
   and each precision (32, 16-mixed, bf16-mixed): step times and a short loss curve against float32.

The report (default `docs/gpu-check.md`) is rewritten after every section, so a run cut short
still says what it did; progress goes to stdout. `--no-gpu` runs the parts that need no GPU on the
CPU (no build, no GPU tests), `--quick` shrinks every size: together they are the CPU test of this
script.

    python tools/gpu_check.py                     # on the GPU machine (make gpu-check)
    python tools/gpu_check.py --no-gpu --quick --out /tmp/check.md
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's shapeprop and harness, on a machine without the .venv

from shapeprop.files import write_atomic  # noqa: E402

SECTIONS = ("build", "tests", "operator", "detector", "demo", "speed")
OPTIONAL_PACKAGES = ("pydantic", "pycocotools", "pytest")  # beyond what `shapeprop-bench env` lists


def log(message: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Report:
    """The Markdown report, written again after each section."""

    def __init__(self, path: Path, title: str):
        self.path, self.parts = path, [title]
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, text: str) -> int:
        """Append a part; returns its index (for `replace`)."""
        self.parts.append(text.rstrip() + "\n")
        write_atomic(self.path, "\n".join(self.parts))
        return len(self.parts) - 1

    def replace(self, index: int, text: str) -> None:
        self.parts[index] = text.rstrip() + "\n"
        write_atomic(self.path, "\n".join(self.parts))


def _commit() -> str:
    """$SHAPEPROP_COMMIT when set (a copied tree's .git may be stale), else git's HEAD."""
    from harness.environment import git_state

    if os.environ.get("SHAPEPROP_COMMIT"):
        return os.environ["SHAPEPROP_COMMIT"]
    state = git_state(ROOT)
    return state["git_commit"][:12] + ("-dirty" if state["git_dirty"] == "true" else "")


def environment(gpu: bool) -> str:
    import torch

    from harness.environment import collect, package_version

    rows = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": _commit()}
    if gpu:
        props = torch.cuda.get_device_properties(0)
        rows["device"] = (
            f"{props.name}, sm_{props.major}{props.minor}, {props.multi_processor_count} SMs, "
            f"{props.total_memory / 2**30:.0f} GiB"
        )
        rows["cuDNN"] = str(torch.backends.cudnn.version())
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            rows["driver"] = smi.stdout.strip() or "unknown"
        except (OSError, subprocess.SubprocessError):
            pass
    else:
        rows["device"] = f"CPU only ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    rows |= collect() | {name: package_version(name) for name in OPTIONAL_PACKAGES}
    return "| | |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows.items())


def build_operator(timeout: int) -> str:
    """Build shapeprop._C in place for the compute capability of GPU 0; fail loudly."""
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=f"{major}.{minor}", MAX_JOBS=str(os.cpu_count() or 2))
    env.setdefault("CUDA_HOME", "/usr/local/cuda")
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"the operator build failed:\n{(out.stdout + out.stderr)[-3000:]}")
    check = subprocess.run(
        [sys.executable, "-c", "import torch, shapeprop._C as c; print(c.has_cuda())"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check.stdout.strip() != "True":
        raise RuntimeError(f"shapeprop._C does not serve CUDA after the build:\n{check.stderr[-2000:]}")
    return f"Built `shapeprop._C` with `TORCH_CUDA_ARCH_LIST={major}.{minor}` in {seconds:.0f} s; it serves CUDA."


def gpu_tests(timeout: int) -> str:
    """`pytest -m gpu` on the modules holding GPU tests (they import only the library)."""
    files = sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py") if "mark.gpu" in p.read_text()
    )
    t0 = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "gpu",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "--import-mode=importlib",  # addopts' import mode: tests/ has same-named files
            *files,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    seconds = time.perf_counter() - t0
    lines = out.stdout.strip().splitlines()
    summary = lines[-1] if lines else "no output"
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    text = f"`pytest -m gpu {' '.join(files)}`: **{summary.strip('= ')}** ({seconds:.0f} s, exit code {out.returncode})."
    if failures:
        text += "\n\n" + "\n".join(f"- {line}" for line in failures)
    if out.returncode != 0:
        text += "\n\n```\n" + (out.stdout + out.stderr)[-4000:] + "\n```"
    return text


def operator_benchmark(sizes: list[int], device: str) -> str:
    from shapeprop.ops.bench import SIZE, STEPS, C, format_table, run

    rows = run(sizes, repeats=5, devices=[device])
    return (
        f"`python -m shapeprop.ops.bench --devices {device} --sizes {' '.join(map(str, sizes))}`: C = {C}, "
        f"{SIZE}x{SIZE} maps, {STEPS} steps, float32, a kernel per channel; median of 5.\n\n"
        + format_table(rows, markdown=True)
    )


def _ratio(r: dict, key: str) -> str:
    """A ratio of medians with the quartiles of the paired per-step ratios behind it."""
    q1, q3 = r[key.replace("_ratio", "_ratio_quartiles")]
    return f"×{r[key]:.3f} ({q1:.2f}–{q3:.2f})"


def detector_benchmark(configs: list[dict], device: str) -> str:
    from shapeprop.models.bench import run_benchmark
    from shapeprop.models.op_counts import format_counts

    header = (
        "| detector | head | precision | train s/step plain → ShapeProp | train ratio | cold-pass ratio "
        "| infer s/img plain → ShapeProp | infer ratio | ops / step plain → ShapeProp "
        "| syncing ops plain → ShapeProp | CUDA syncs plain → ShapeProp |\n" + "|---" * 11 + "|"
    )
    rows, notes = [], []
    for cfg in configs:
        log(f"detector benchmark: {cfg['label']}")
        r = run_benchmark(device=device, count=True, **cfg["kwargs"])
        cuda = (
            f"{r['cuda_syncs_plain']} → {r['cuda_syncs_shapeprop']}"
            if "cuda_syncs_plain" in r
            else "n/a (CPU)"
        )
        rows.append(
            f"| {cfg['detector']} | {cfg['head']} | {cfg['kwargs'].get('precision', '32')} "
            f"| {r['train_s_per_step_plain']:.4f} → {r['train_s_per_step_shapeprop']:.4f} "
            f"| {_ratio(r, 'train_ratio')} | {_ratio(r, 'train_ratio_cold')} "
            f"| {r['infer_s_per_img_plain']:.4f} → {r['infer_s_per_img_shapeprop']:.4f} | {_ratio(r, 'infer_ratio')} "
            f"| {r['ops_plain']} → {r['ops_shapeprop']} | {r['syncs_plain']} → {r['syncs_shapeprop']} | {cuda} |"
        )
        notes.append(f"{cfg['label']}:\n\n```\n{format_counts(r['counts'])}\n```")
    commands = "\n".join(f"    {cfg['command']}" for cfg in configs)
    return (
        "Medians over alternating steps of two detectors sharing every common weight "
        "(`python -m shapeprop.models.bench`, score threshold 0, up to 100 detections per image, "
        "randomly initialised backbone); in brackets the quartiles of the paired per-step (per-image) "
        "ratios. Training is timed in two passes over the same steps: the "
        "train ratio is the second (every RoI count seen before: the steady state of a long run), "
        "the cold-pass ratio the first (cuDNN builds kernels for each new RoI count). Counts are "
        f"of one training step (forward, backward, SGD step).\n\n{header}\n"
        + "\n".join(rows)
        + f"\n\nCommands:\n\n{commands}\n\nWhat ShapeProp adds, per model:\n\n"
        + "\n\n".join(notes)
    )


def demo_rows(quick: bool) -> str:
    """The demo suite's mini runs, trained and evaluated on this machine through `run_experiment`
    (`quick`: 2 steps, 2 test images, the tiny backbone from random weights: a plumbing check)."""
    from harness.suite import expand, load_suite
    from shapeprop.experiment import run_experiment

    runs = expand(load_suite(ROOT / "suites" / "demo.yaml"), "mini")
    lines = [
        "| row | steps | train s/step | wall s | mask AP | box AP | IoU@GT |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for spec in runs:
            cfg = spec.config
            if quick:
                cfg = cfg.model_copy(
                    update={
                        "schedule": cfg.schedule.model_copy(
                            update={
                                "max_steps": 2,
                                "milestones": [],
                                "warmup_steps": 0,
                                "checkpoint_every": 2,
                            }
                        ),
                        "eval": cfg.eval.model_copy(update={"max_images": 2}),
                        "model": cfg.model.model_copy(update={"weights": None}),
                    }
                )
            log(f"demo row {spec.row!r}: {cfg.schedule.max_steps} steps")
            t0 = time.perf_counter()
            result = run_experiment(cfg, Path(tmp) / spec.key, progress=False)
            wall = time.perf_counter() - t0
            m = result.metrics
            lines.append(
                f"| {spec.row} | {cfg.schedule.max_steps} | {m['train_s_per_step']:.4f} | {wall:.1f} "
                f"| {m['segm_AP']:.1f} | {m['bbox_AP']:.1f} | {m['gtbox_mask_iou']:.1f} |"
            )
    return (
        "`suites/demo.yaml`, mini profile (seed 0), through `shapeprop.experiment.run_experiment`; wall "
        "time includes data loading, training and evaluation.\n\n" + "\n".join(lines)
    )


def speed(quick: bool, device: str) -> str:
    """Roofline and compile modes of the Mask R-CNN step (on a GPU: R-50-FPN, official head), then
    each precision: both detectors' step times and the Mask R-CNN loss curve against float32's."""
    from shapeprop.config import ShapePropConfig
    from shapeprop.models.bench import run_benchmark
    from shapeprop.models.roofline import format_roofline

    if quick:  # channels-last twins: the twin machinery without minutes of compiling on a CPU
        size = dict(backbone="tiny", size=64, batch_size=2, steps=1, images=0, warmup=1)
        head = ShapePropConfig(preset="light")
        variants, precisions, curve_steps = [{"channels_last": True}], ["32", "bf16-mixed"], 2
        archs = ["mask_rcnn"]
    else:
        size = dict(backbone="resnet50", size=800, batch_size=2, steps=10, images=0, warmup=3)
        head = ShapePropConfig(preset="official")
        variants = [{"compile": "default"}, {"compile": "reduce-overhead"}]
        precisions, curve_steps = ["32", "16-mixed", "bf16-mixed"], 60
        archs = ["mask_rcnn", "retinamask"]
    parts = []
    header = (
        "| fast twin | train s/step plain → ShapeProp, eager | fast | ShapeProp ratio eager → fast "
        "| first step s (compiling) plain / ShapeProp |\n" + "|---" * 5 + "|"
    )
    rows = []
    for i, fast in enumerate(variants):
        log(f"speed: {fast}")
        r = run_benchmark(device=device, shapeprop=head, roofline=i == 0, **fast, **size)
        if i == 0:
            parts.append(f"Roofline of one training step (float32, eager):\n\n```\n{format_roofline(r)}\n```")
        rows.append(
            f"| {', '.join(f'{k} {v}' for k, v in fast.items())} "
            f"| {r['train_s_per_step_plain']:.4f} → {r['train_s_per_step_shapeprop']:.4f} "
            f"| {r['train_s_per_step_plain fast']:.4f} → {r['train_s_per_step_shapeprop fast']:.4f} "
            f"| ×{r['train_ratio']:.3f} → ×{r['train_ratio fast']:.3f} "
            f"| {r['first_step_s_plain fast']:.1f} / {r['first_step_s_shapeprop fast']:.1f} |"
        )
    parts.append(f"Eager and fast twins (same weights) trained in turn:\n\n{header}\n" + "\n".join(rows))
    rows = ["| detector | precision | train s/step plain → ShapeProp | ratio |", "|---|---|---|---|"]
    saliency_amp = head.model_copy(update={"saliency_autocast": True})
    cases = [(arch, precision, head) for arch in archs for precision in precisions]
    # the saliency learner under autocast too (model.shapeprop.saliency_autocast; default off)
    cases += [("mask_rcnn", precision, saliency_amp) for precision in precisions if precision != "32"]
    for arch, precision, shapeprop in cases:
        label = f"`{precision}`" + (", saliency learner in it" if shapeprop.saliency_autocast else "")
        log(f"speed: {arch}, precision {label}")
        r = run_benchmark(arch, device=device, shapeprop=shapeprop, precision=precision, **size)
        rows.append(
            f"| {arch} | {label} | {r['train_s_per_step_plain']:.4f} → "
            f"{r['train_s_per_step_shapeprop']:.4f} | ×{r['train_ratio']:.3f} |"
        )
    parts.append("Precision (eager):\n\n" + "\n".join(rows))
    parts.append(loss_curves(size, head, precisions, curve_steps, device))
    return (
        f"Mask R-CNN {size['backbone']}, {size['size']} px, batch {size['batch_size']}, {head.preset} head "
        f"(`python -m shapeprop.models.bench --backbone {size['backbone']} --size {size['size']} --batch 2 "
        f"--preset {head.preset} --compile MODE --roofline`). Decides `model.compile`'s and the full profiles' precision defaults: "
        "docs/roofline.md.\n\n" + "\n\n".join(parts)
    )


def loss_curves(size: dict, head, precisions: list[str], steps: int, device: str) -> str:
    """The ShapeProp detector trained `steps` SGD steps from the same weights and batches in each
    precision: the summed loss at a few steps, and its largest relative gap to float32's."""
    import torch

    from shapeprop.config import DataConfig, ModelConfig
    from shapeprop.data import catalog
    from shapeprop.data.loading import make_loader
    from shapeprop.models.bench import PRECISIONS
    from shapeprop.models.build import build_detector

    dev = torch.device(device)
    with tempfile.TemporaryDirectory() as tmp:
        records = catalog.load(
            "synthetic", root=Path(tmp), split="train", num_images=16, image_size=size["size"]
        ).records
        data = DataConfig(min_size=size["size"], max_size=size["size"], num_workers=0)
        batches = [
            b for _, b in zip(range(8), make_loader(records, data, True, size["batch_size"], 0), strict=False)
        ]
    cfg = ModelConfig(backbone=size["backbone"], shapeprop=head)
    torch.manual_seed(0)
    start = build_detector(cfg, 10, size["size"], size["size"]).state_dict()
    curves = {}
    for precision in precisions:
        log(f"loss curve: {precision}")
        model = build_detector(cfg, 10, size["size"], size["size"]).to(dev).train()
        model.load_state_dict(start)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
        dtype = PRECISIONS[precision]
        scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
        curve = []
        for step in range(steps):
            images, targets = batches[step % len(batches)]
            images = [i.to(dev) for i in images]
            targets = [{k: v.to(dev) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
            torch.manual_seed(step)
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                loss = sum(model(images, targets).values())
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            curve.append(loss.item())
        curves[precision] = curve
    shown = sorted({0, steps // 4, steps // 2, steps - 1})
    lines = [
        "| precision | " + " | ".join(f"loss @ {s}" for s in shown) + " | largest gap to 32 |",
        "|---" * (len(shown) + 2) + "|",
    ]
    for precision, curve in curves.items():
        gap = max(abs(a - b) / abs(b) for a, b in zip(curve, curves["32"], strict=True))
        lines.append(
            f"| `{precision}` | " + " | ".join(f"{curve[s]:.4f}" for s in shown) + f" | {100 * gap:.1f} % |"
        )
    return f"Loss curves, {steps} steps from the same weights and batches (SGD, lr 0.005):\n\n" + "\n".join(
        lines
    )


def detector_configs(quick: bool) -> list[dict]:
    """Each arch with each head preset in float32, and the official head in the authors' float16."""
    from shapeprop.config import ShapePropConfig

    if quick:
        size = dict(backbone="tiny", size=64, batch_size=2, steps=1, images=1, warmup=1)
        cases = [("mask_rcnn", "light", "32"), ("retinamask", "light", "32")]
    else:
        size = dict(backbone="resnet50", size=800, batch_size=2, steps=20, images=20, warmup=3)
        cases = [
            ("mask_rcnn", "official", "32"),
            ("mask_rcnn", "official", "16-mixed"),
            ("mask_rcnn", "light", "32"),
            ("retinamask", "official", "32"),
            ("retinamask", "light", "32"),
            # The head's work grows with the RoIs it sees: every sampled RoI (512 per image) by
            # default, as the authors; model.shapeprop_rois_per_image caps them (all positives kept).
            ("mask_rcnn", "official", "32", 128),
            ("mask_rcnn", "light", "32", 128),
        ]
    configs = []
    for arch, preset, precision, *cap in cases:
        rois = cap[0] if cap else None
        kwargs = dict(arch=arch, precision=precision, shapeprop=ShapePropConfig(preset=preset), **size)
        kwargs["shapeprop_rois_per_image"] = rois
        command = (
            f"python -m shapeprop.models.bench --arch {arch} --preset {preset} --precision {precision} "
            + (f"--shapeprop-rois {rois} " if rois else "")
            + f"--backbone {size['backbone']} --size {size['size']} --batch 2 --steps {size['steps']} "
            f"--images {size['images']} --warmup {size['warmup']} --count"
        )
        name = "Mask R-CNN" if arch == "mask_rcnn" else "RetinaMask"
        configs.append(
            dict(
                label=f"{arch} / {preset} / {precision}" + (f" / {rois} RoIs" if rois else ""),
                detector=f"{name} {size['backbone']}, {size['size']} px",
                head=preset + (f", ≤ {rois} RoIs/image" if rois else ""),
                kwargs=kwargs,
                command=command,
            )
        )
    return configs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "gpu-check.md", help="the Markdown report")
    p.add_argument("--no-gpu", action="store_true", help="run what needs no GPU, on the CPU")
    p.add_argument("--quick", action="store_true", help="smallest sizes everywhere (tests)")
    p.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to leave out")
    p.add_argument(
        "--data", type=Path, help="$SHAPEPROP_DATA: the synthetic set and the pretrained tiny backbone"
    )
    args = p.parse_args(argv)
    if args.data:
        os.environ["SHAPEPROP_DATA"] = str(args.data.resolve())

    import torch

    gpu = not args.no_gpu
    if gpu and not torch.cuda.is_available():
        p.error("no CUDA GPU is visible to torch (use --no-gpu for the CPU-side parts)")
    device = "cuda" if gpu else "cpu"
    started = time.perf_counter()
    name = torch.cuda.get_device_name(0) if gpu else "CPU only"
    report = Report(args.out, f"# GPU check: {name}\n\n`make gpu-check` (`tools/gpu_check.py`).\n")
    environment_part = report.add(environment(gpu))
    failed = []

    def section(key: str, title: str, fn: Callable[[], str], needs_gpu: bool = False) -> None:
        if key in args.skip or (needs_gpu and not gpu):
            why = "no GPU (--no-gpu)" if key not in args.skip else "--skip"
            report.add(f"## {title}\n\nSkipped: {why}.")
            log(f"{title}: skipped ({why})")
            return
        log(f"{title} ...")
        t0 = time.perf_counter()
        try:
            body = fn()
        except Exception:  # report it and go on: the later sections still say something
            failed.append(key)
            body = "**FAILED**\n\n```\n" + traceback.format_exc()[-4000:] + "\n```"
        seconds = time.perf_counter() - t0
        report.add(f"## {title} ({seconds:.0f} s)\n\n{body}")
        log(f"{title}: {'FAILED' if key in failed else 'done'} in {seconds:.0f} s")

    quick = args.quick
    section("build", "1. Operator build", lambda: build_operator(timeout=900), needs_gpu=True)
    importlib.invalidate_caches()  # the table's operator line, as built now (it was read before the build)
    report.replace(environment_part, environment(gpu))
    section("tests", "2. GPU tests", lambda: gpu_tests(timeout=900), needs_gpu=True)
    sizes = [16] if quick else [64, 512, 2048, 8192]
    section("operator", "3. Propagation operator", lambda: operator_benchmark(sizes, device))
    section(
        "detector",
        "4. ShapeProp's overhead on a detector",
        lambda: detector_benchmark(detector_configs(quick), device),
    )
    section("demo", "5. Demo rows end to end", lambda: demo_rows(quick))
    section("speed", "6. Speed: roofline, compile, precision", lambda: speed(quick, device))
    total = time.perf_counter() - started
    report.add(
        f"Total: {total:.0f} s. "
        + (f"**Failed sections: {', '.join(failed)}.**" if failed else "Every section ran.")
    )
    log(f"report: {args.out} ({total:.0f} s){'; FAILED: ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
