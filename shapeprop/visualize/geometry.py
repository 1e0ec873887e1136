"""Crop geometry of the figures: square windows around boxes, bilinear resampling of images, masks
and RoI maps onto panels, and matching a detection to its ground truth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou, roi_align

from shapeprop.eval.best_overlap import paste_maps
from shapeprop.visualize.views import GroundTruth


def match_ground_truth(box: np.ndarray, gt: GroundTruth, min_iou: float = 0.5) -> tuple[int | None, float]:
    """The GT with the highest box IoU with `box` (class-agnostic), if that IoU is at least `min_iou`."""
    if len(gt.boxes) == 0:
        return None, 0.0
    iou = box_iou(torch.as_tensor(box, dtype=torch.float32)[None], torch.as_tensor(gt.boxes))[0]
    best = int(iou.argmax())
    value = float(iou[best])
    return (best if value >= min_iou else None), value


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two binary masks (0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def square_crop(box: Sequence[float], margin: float = 0.3, min_side: float = 16.0) -> np.ndarray:
    """A square window [x0, y0, x1, y1] centred on XYXY `box`, `margin` of its longer side wider on
    each side (at least `min_side` pixels); it may extend past the image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(max(x1 - x0, y1 - y0) * (1 + 2 * margin), min_side)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dtype=np.float32)


def image_window(height: int, width: int) -> np.ndarray:
    """The square window that shows a whole `height` x `width` image, centred (letterboxed)."""
    side = max(height, width)
    cx, cy = width / 2, height / 2
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dtype=np.float32)


def resample(array: np.ndarray, window: Sequence[float], size: int) -> np.ndarray:
    """Bilinear samples of `array` ([H, W] or [H, W, C]) on a `size` x `size` grid over `window`
    (XYXY, pixel edges; a pixel covers [x, x + 1)). Samples outside the array are 0."""
    data = torch.as_tensor(np.asarray(array, dtype=np.float32))
    chw = data[None] if data.dim() == 2 else data.permute(2, 0, 1)
    # RoIAlign repeats the edge for samples less than a pixel outside: a zero border makes them 0.
    chw = torch.nn.functional.pad(chw, (1, 1, 1, 1))
    rois = torch.tensor([[0.0, *(float(v) + 1 for v in window)]])
    out = roi_align(chw[None], rois, (size, size), spatial_scale=1.0, sampling_ratio=1, aligned=True)[0]
    return (out[0] if data.dim() == 2 else out.permute(1, 2, 0)).numpy()


def resample_mask(mask: np.ndarray, window: Sequence[float], size: int, threshold: float = 0.5) -> np.ndarray:
    """A binary mask of a `size` x `size` panel showing `window`: `mask` ([H, W], binary or
    probabilities) resampled, then `> threshold`."""
    return resample(np.asarray(mask, dtype=np.float32), window, size) > threshold


def window_box(box: Sequence[float], window: Sequence[float], size: int) -> np.ndarray:
    """XYXY `box` in the pixel coordinates of a `size` x `size` panel showing `window`."""
    scale = size / (float(window[2]) - float(window[0]))
    origin = np.array([window[0], window[1], window[0], window[1]], dtype=np.float32)
    return (np.asarray(box, dtype=np.float32) - origin) * scale


def paste_roi_map(
    roi_map: np.ndarray, box: Sequence[float], window: Sequence[float], size: int
) -> np.ndarray:
    """An [S, S] RoI map over XYXY `box`, pasted (bilinearly) into a `size` x `size` panel showing `window`."""
    panel_box = torch.as_tensor(window_box(box, window, size))[None]
    return paste_maps(torch.as_tensor(roi_map, dtype=torch.float32)[None, None], panel_box, size, size)[
        0
    ].numpy()
