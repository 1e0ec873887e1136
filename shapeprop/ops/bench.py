"""Benchmark of the fused propagation operator against the unfold reference.

    python -m shapeprop.ops.bench [--sizes 64 512] [--repeats 5] [--threads T] [--markdown]

For every device present (CPU; CUDA when visible) and every N, with C=24, 14x14 maps, 14 steps,
float32 and a kernel per channel, it prints the median time of a forward pass (no grad) and of
a forward+backward pass, and the peak memory of one forward+backward pass, for the extension
and the reference, with reference/extension ratios. Peak memory is what the pass allocates on
top of its inputs: on CUDA from the caching allocator's statistics, on the CPU as the rise of
the resident set's high-water mark, measured in a fresh subprocess per figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from shapeprop.ops.propagation import extension_available, propagate
from shapeprop.ops.reference import propagate_reference
from shapeprop.timing import synchronize

C, SIZE, STEPS = 24, 14, 14
IMPLS: dict[str, Callable] = {"extension": propagate, "reference": propagate_reference}


def _inputs(n: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, C, SIZE, SIZE, generator=gen).to(device).requires_grad_()
    w = torch.rand(n, C * 9, SIZE, SIZE, generator=gen).to(device).requires_grad_()
    grad = torch.randn(n, C, SIZE, SIZE, generator=gen).to(device)
    return x, w, grad


def _fwd_bwd(fn: Callable, x: torch.Tensor, w: torch.Tensor, grad: torch.Tensor) -> None:
    x.grad = w.grad = None
    fn(x, w, STEPS).backward(grad)


def time_impl(impl: str, n: int, device: str, repeats: int) -> tuple[float, float]:
    """Median seconds of (forward without grad, forward + backward)."""
    fn = IMPLS[impl]
    x, w, grad = _inputs(n, device)
    fwd, both = [], []
    _fwd_bwd(fn, x, w, grad)  # warm-up
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        with torch.no_grad():
            fn(x, w, STEPS)
        synchronize(device)
        mid = time.perf_counter()
        _fwd_bwd(fn, x, w, grad)
        synchronize(device)
        fwd.append(mid - start)
        both.append(time.perf_counter() - mid)
    return statistics.median(fwd), statistics.median(both)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def peak_memory_cpu_here(impl: str, n: int) -> int:
    """Bytes by which one forward+backward raises this process's resident high-water mark."""
    fn = IMPLS[impl]
    _fwd_bwd(fn, *_inputs(2, "cpu"))  # load kernels and thread pools on a tiny problem
    x, w, grad = _inputs(n, "cpu")
    base = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    _fwd_bwd(fn, x, w, grad)
    return (_rss_kib("VmHWM") - base) * 1024


def peak_memory(impl: str, n: int, device: str) -> int:
    """Peak bytes allocated by one forward+backward on top of its inputs."""
    if device == "cuda":
        fn = IMPLS[impl]
        x, w, grad = _inputs(n, device)
        _fwd_bwd(fn, x, w, grad)
        x.grad = w.grad = None
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        _fwd_bwd(fn, x, w, grad)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "shapeprop.ops.bench",
            "--threads",
            str(torch.get_num_threads()),
            "--_peak-cpu",
        ]
        + [impl, str(n)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


def run(sizes: list[int], repeats: int, devices: list[str] | None = None) -> list[dict]:
    """One row per (device, N): times in seconds and peak memory in bytes of both implementations.
    `devices`: default the CPU and, when present, CUDA."""
    devices = devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        if not extension_available(device):
            print(f"skipping {device}: shapeprop._C does not serve it (build the extension)", file=sys.stderr)
            continue
        for n in sizes:
            row: dict = {"device": device, "N": n, "threads": torch.get_num_threads()}
            for impl in IMPLS:
                row[f"{impl}_fwd_s"], row[f"{impl}_fwd_bwd_s"] = time_impl(impl, n, device, repeats)
                row[f"{impl}_peak_bytes"] = peak_memory(impl, n, device)
            rows.append(row)
    return rows


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """Rows as a text (or markdown) table with reference / extension ratios."""
    header = [
        "device",
        "N",
        "fwd ext ms",
        "fwd ref ms",
        "fwd speed-up",
        "fwd+bwd ext ms",
        "fwd+bwd ref ms",
        "fwd+bwd speed-up",
        "peak ext MiB",
        "peak ref MiB",
        "memory ratio",
    ]
    lines = []
    for r in rows:
        mib = 2**20
        lines.append(
            [
                r["device"],
                str(r["N"]),
                f"{r['extension_fwd_s'] * 1e3:.1f}",
                f"{r['reference_fwd_s'] * 1e3:.1f}",
                f"{r['reference_fwd_s'] / r['extension_fwd_s']:.1f}x",
                f"{r['extension_fwd_bwd_s'] * 1e3:.1f}",
                f"{r['reference_fwd_bwd_s'] * 1e3:.1f}",
                f"{r['reference_fwd_bwd_s'] / r['extension_fwd_bwd_s']:.1f}x",
                f"{r['extension_peak_bytes'] / mib:.1f}",
                f"{r['reference_peak_bytes'] / mib:.1f}",
                f"1/{r['reference_peak_bytes'] / max(r['extension_peak_bytes'], 1):.0f}",
            ]
        )
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.rjust(wd) for h, wd in zip(header, widths, strict=True))]
    out += ["  ".join(v.rjust(wd) for v, wd in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512], help="numbers of RoIs N")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (the median is reported)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument(
        "--devices", nargs="+", choices=["cpu", "cuda"], help="default: cpu and cuda if present"
    )
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--json", type=Path, help="also write the raw rows to this file")
    parser.add_argument("--_peak-cpu", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._peak_cpu:
        print(peak_memory_cpu_here(args._peak_cpu[0], int(args._peak_cpu[1])))
        return
    rows = run(args.sizes, args.repeats, args.devices)
    print(
        f"propagation: C={C}, {SIZE}x{SIZE}, {STEPS} steps, float32, a kernel per channel; "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    print(format_table(rows, args.markdown))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
