"""RoIAlign on small CPU feature maps as two matrix products (the miniatures' hot spot).

On the CPU, torchvision's RoIAlign backward recomputes the bilinear weights of every sample for
every channel, one scalar at a time: on the tiny detector it took 12-30 % of a training step
(`python -m shapeprop.models.bench --profile`; the most with the ShapeProp head and small RPN).
RoIAlign of an axis-aligned box is separable: the sample grid is a product of rows and columns,
a bilinear weight is a row weight times a column weight, and a sample outside the map has a zero
row or column weight. So with `Ay[r]` (pooled rows x H: the mean over a bin's samples of their
row weights) and `Ax[r]` (pooled columns x W), the output is `Ay[r] @ features[image of r] @
Ax[r]^T` per channel: torchvision's values (to float rounding), with a backward that autograd
makes of two matrix products. Its cost grows with H x W, so it is used on the CPU for maps up
to `SEPARABLE_MAX_PIXELS` (a 128 px image's largest FPN level has 32 x 32) with a fixed sampling
ratio; everything else goes to torchvision.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign as _TorchvisionMultiScaleRoIAlign
from torchvision.ops import roi_align as _torchvision_roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

SEPARABLE_MAX_PIXELS = 64 * 64


def _axis_weights(start: Tensor, bin_size: Tensor, pooled: int, grid: int, size: int) -> Tensor:
    """[R, pooled, size]: per bin, the mean over its `grid` samples of their bilinear weights along
    one axis, with torchvision's rules (a sample beyond -1 or `size` weighs nothing; one past the
    last pixel is clamped onto it)."""
    steps = torch.arange(pooled, dtype=start.dtype, device=start.device)[:, None]
    offsets = (torch.arange(grid, dtype=start.dtype, device=start.device) + 0.5) / grid
    pos = start[:, None, None] + (steps + offsets) * bin_size[:, None, None]  # [R, pooled, grid]
    inside = ((pos >= -1.0) & (pos <= size)).to(pos.dtype)
    pos = pos.clamp(min=0)
    low = pos.floor()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    frac = torch.where(at_edge, torch.zeros_like(pos), pos - low)
    low = low.long()
    high = torch.where(at_edge, low, low + 1)
    weights = pos.new_zeros(pos.shape[0], pooled, size)
    weights.scatter_add_(2, low, (1 - frac) * inside).scatter_add_(2, high, frac * inside)
    return weights / grid


def _separable_roi_align(
    features: Tensor, rois: Tensor, output_size: tuple[int, int], scale: float, ratio: int, aligned: bool
) -> list[tuple[Tensor, Tensor]]:
    """The pooled RoIs of each image: (their rows in `rois`, [n, C, *output_size])."""
    pooled_h, pooled_w = output_size
    num_images, channels, height, width = features.shape
    with torch.no_grad():  # the weights depend on the boxes only (RoIAlign has no box gradient)
        x0, y0, x1, y1 = (rois[:, 1:].to(features.dtype) * scale - (0.5 if aligned else 0.0)).unbind(1)
        box_w, box_h = x1 - x0, y1 - y0
        if not aligned:  # torchvision's legacy mode: boxes at least one cell wide
            box_w, box_h = box_w.clamp(min=1.0), box_h.clamp(min=1.0)
        rows = _axis_weights(y0, box_h / pooled_h, pooled_h, ratio, height)
        cols = _axis_weights(x0, box_w / pooled_w, pooled_w, ratio, width)
    pieces = []
    image_of = rois[:, 0].long()
    for image in range(num_images):
        picked = (image_of == image).nonzero().squeeze(1)
        n = len(picked)
        if n == 0:
            continue
        # [n * pooled_h, H] @ [H, C * W] -> rows pooled; then each RoI's [pooled_h * C, W] @ [W, pooled_w]
        by_rows = rows[picked].reshape(n * pooled_h, height) @ features[image].transpose(0, 1).reshape(
            height, channels * width
        )
        pooled = by_rows.view(n, pooled_h * channels, width) @ cols[picked].transpose(1, 2)
        pieces.append((picked, pooled.view(n, pooled_h, channels, pooled_w).permute(0, 2, 1, 3)))
    return pieces


def _in_order(pieces: list[tuple[Tensor, Tensor]], count: int, like: Tensor, size: tuple[int, int]) -> Tensor:
    """[count, C, *size]: row `picked[k]` of the result is row k of `pooled`, for every (picked, pooled)
    of `pieces`, which cover each row once. One concatenation and one gather: writing each piece
    into the output instead (`index_copy`, out of place for autograd) copied the whole output per
    piece, forward and backward, once per image and level."""
    if not pieces:
        return like.new_zeros((count, like.shape[1], *size))
    if len(pieces) == 1:
        return pieces[0][1].contiguous()
    order = torch.cat([picked for picked, _ in pieces])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=order.device)
    return _Reorder.apply(torch.cat([pooled.to(like.dtype) for _, pooled in pieces]), order, inverse)


class _Reorder(torch.autograd.Function):
    """`rows[inverse]` for a permutation `inverse` of the rows (`order` its inverse), with a gather as
    its backward too: indexing's own backward scatters with accumulation, which took ~3 ms a step
    for the 128 RoIs of a CPU miniature."""

    @staticmethod
    def forward(ctx, rows: Tensor, order: Tensor, inverse: Tensor) -> Tensor:
        ctx.save_for_backward(order)
        return rows[inverse]

    @staticmethod
    def backward(ctx, grad: Tensor):
        (order,) = ctx.saved_tensors
        return grad[order], None, None


def _roi_align_pieces(
    features: Tensor, rois: Tensor, output_size: tuple[int, int], scale: float, ratio: int, aligned: bool
) -> list[tuple[Tensor, Tensor]]:
    """`roi_align` as (rows of `rois`, pooled) pieces, which `_in_order` puts together."""
    height, width = features.shape[-2:]
    small = height * width <= SEPARABLE_MAX_PIXELS
    # no RoIs: torchvision's, whose empty output still has `features` in its graph (a zero gradient)
    if features.device.type == "cpu" and ratio > 0 and small and len(rois):
        return _separable_roi_align(features, rois, output_size, scale, ratio, aligned)
    everything = torch.arange(len(rois), device=rois.device)
    return [(everything, _torchvision_roi_align(features, rois, output_size, scale, ratio, aligned))]


def roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """torchvision.ops.roi_align for `rois` [K, 5] (image index, x1, y1, x2, y2), separable on small
    CPU maps with a fixed `sampling_ratio` (see the module docstring), torchvision's otherwise."""
    pieces = _roi_align_pieces(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
    return _in_order(pieces, len(rois), features, output_size)


class MultiScaleRoIAlign(_TorchvisionMultiScaleRoIAlign):
    """torchvision's FPN RoI pooler (same levels, scales and outputs) on this module's `roi_align`."""

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        levels = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                levels, image_shapes, self.canonical_scale, self.canonical_level
            )
        rois = _convert_to_roi_format(boxes)
        size = tuple(self.output_size)
        if len(levels) == 1:
            return roi_align(levels[0], rois, size, self.scales[0], self.sampling_ratio)
        level_of = self.map_levels(boxes)
        pieces = []  # every level's, put in order once (`_in_order`)
        for level, (features, scale) in enumerate(zip(levels, self.scales, strict=True)):
            picked = torch.where(level_of == level)[0]
            for rows, pooled in _roi_align_pieces(
                features, rois[picked], size, scale, self.sampling_ratio, False
            ):
                pieces.append((picked[rows], pooled))
        return _in_order(pieces, len(rois), levels[0], size)
