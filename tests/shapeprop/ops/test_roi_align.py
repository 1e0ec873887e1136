"""The separable CPU RoIAlign equals torchvision's, forward and backward, and the FPN pooler built on
it equals torchvision's MultiScaleRoIAlign. In float64: in float32 both round the sample
coordinates, in a different order, and differ by up to about 1e-5 on maps of 64 pixels."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torchvision

from shapeprop.ops import roi_align as ours


def _rois(num_images: int, count: int, extent: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(count, 2, generator=g) * extent * 1.2 - 0.1 * extent
    size = torch.rand(count, 2, generator=g) * extent * 0.6
    image = torch.randint(0, num_images, (count, 1), generator=g).float()
    rois = torch.cat([image, corner, corner + size], 1)
    # the edge cases: partly outside, wholly outside, a point, a box on the last pixel
    rois[:4, 1:] = torch.tensor(
        [[-9.0, -9.0, 3.5, 2.5], [extent + 5, extent + 5, extent + 50, extent + 40], [3, 3, 3, 3],
         [extent - 1, extent - 2, extent, extent]]
    )  # fmt: skip
    return rois


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize(
    ("shape", "output", "scale", "ratio"),
    [((3, 16, 24, 20), (7, 7), 0.25, 2), ((2, 8, 14, 14), (14, 14), 0.5, 2), ((1, 4, 9, 31), (5, 3), 1.0, 3)],
)
def test_separable_roi_align_equals_torchvision_forward_and_backward(shape, output, scale, ratio, aligned):
    g = torch.Generator().manual_seed(0)
    features = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    rois = _rois(shape[0], 40, max(shape[2:]) / scale, seed=1).double()
    expected = torchvision.ops.roi_align(features, rois, output, scale, ratio, aligned)
    got = ours.roi_align(features, rois, output, scale, ratio, aligned)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    weights = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), features)
    (grad_got,) = torch.autograd.grad((got * weights).sum(), features)
    assert grad_expected.abs().sum() > 0
    torch.testing.assert_close(grad_got, grad_expected, rtol=1e-10, atol=1e-12)


def test_large_maps_and_adaptive_sampling_stay_torchvisions(monkeypatch):
    calls = []
    monkeypatch.setattr(ours, "_separable_roi_align", lambda *a: calls.append(a))
    big = torch.randn(1, 2, 65, 64)
    rois = _rois(1, 5, 64, seed=2)
    torch.testing.assert_close(
        ours.roi_align(big, rois, (7, 7), 1.0, 2), torchvision.ops.roi_align(big, rois, (7, 7), 1.0, 2)
    )
    small = torch.randn(1, 2, 16, 16)
    torch.testing.assert_close(
        ours.roi_align(small, rois, (7, 7), 0.25, -1),
        torchvision.ops.roi_align(small, rois, (7, 7), 0.25, -1),
    )
    assert not calls
    ours.roi_align(small, rois, (7, 7), 0.25, 2)
    assert len(calls) == 1


def test_fpn_pooler_equals_torchvisions():
    g = torch.Generator().manual_seed(3)
    names = ["0", "1", "2", "3"]
    features = OrderedDict(
        (n, torch.randn(2, 8, 64 // 2**i, 48 // 2**i, generator=g, dtype=torch.float64, requires_grad=True))
        for i, n in enumerate(names)
    )
    boxes = []
    for _ in range(2):  # from a few pixels to most of the image: every level gets some
        corner = torch.rand(40, 2, generator=g) * torch.tensor([40.0, 60.0])
        size = torch.rand(40, 1, generator=g) ** 2 * torch.tensor([[150.0, 190.0]]) + 2
        boxes.append(torch.cat([corner, corner + size], 1).double())
    sizes = [(256, 192), (256, 192)]
    expected = torchvision.ops.MultiScaleRoIAlign(names, 7, 2)(features, boxes, sizes)
    got = ours.MultiScaleRoIAlign(names, 7, 2)(features, boxes, sizes)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    weights = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    levels = list(features.values())
    grads_expected = torch.autograd.grad((expected * weights).sum(), levels)
    grads_got = torch.autograd.grad((got * weights).sum(), levels)  # a level without boxes: zeros
    assert sum(bool(grad.any()) for grad in grads_expected) >= 2  # the boxes reach several levels
    for a, b in zip(grads_got, grads_expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_sample_exactly_on_the_far_edge_counts_as_inside():
    features = torch.arange(16.0).view(1, 1, 4, 4)
    rois = torch.tensor([[0.0, 3.0, 3.0, 5.0, 5.0]])  # one sample, at (4, 4): the map's far edge
    expected = torchvision.ops.roi_align(features, rois, (1, 1), 1.0, 1)
    assert expected.item() == 15.0
    torch.testing.assert_close(ours.roi_align(features, rois, (1, 1), 1.0, 1), expected)
