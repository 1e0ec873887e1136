"""The roofline: counted FLOPs (the propagation's by its formula), the peak, the time split."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from shapeprop.models.roofline import count_flops, format_roofline, matmul_peaks, step_roofline
from shapeprop.ops import propagate

pytestmark = pytest.mark.usefixtures("one_thread")


def test_count_flops_counts_products_convolutions_and_the_propagation():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    x, w = torch.randn(2, 3, 10, 10, requires_grad=True), torch.randn(5, 3, 3, 3, requires_grad=True)
    forward = 2 * 2 * 5 * 10 * 10 * 3 * 9
    assert count_flops(lambda: F.conv2d(x, w, padding=1)) == forward
    assert count_flops(lambda: F.conv2d(x, w, padding=1).sum().backward()) == 3 * forward
    latent, weights = torch.randn(2, 4, 6, 6, requires_grad=True), torch.rand(2, 36, 6, 6, requires_grad=True)
    one_pass = 2 * 9 * 5 * latent.numel()  # 5 steps of 9 multiply-adds per value
    assert count_flops(lambda: propagate(latent, weights, steps=5)) == one_pass
    assert count_flops(lambda: propagate(latent, weights, steps=5).sum().backward()) == 3 * one_pass


def test_step_roofline_splits_the_time_and_relates_flops_to_the_peak():
    cpu = torch.device("cpu")
    peaks = matmul_peaks(cpu, size=256, repeats=2)
    assert set(peaks) == {"float32", "bfloat16"} and all(p > 1e8 for p in peaks.values())
    a = torch.randn(256, 256)
    r = step_roofline(lambda: (a @ a).relu().sum(), cpu, peaks)
    assert r["flops"] == 2 * 256**3
    assert r["fraction_of_peak"]["float32"] == pytest.approx(r["flops"] / r["wall_s"] / peaks["float32"])
    assert r["flop_ops_s"] > 0 and r["other_ops_s"] > 0  # mm, then relu and sum
    assert r["flop_ops_s"] + r["other_ops_s"] + r["outside_ops_s"] >= r["profiled_s"] * 0.99
    assert any("mm" in name for name, _, _ in r["top"])
    table = format_roofline({"peaks": peaks, "roofline": {"step": {**r, "ops": 3}}})
    assert "GFLOP/s" in table and "step" in table
