"""Drawing on one square panel: the image crop, masks as overlays and contours, boxes, and the
colours every figure shares."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.patches import Rectangle

from shapeprop.visualize.geometry import resample, resample_mask, window_box
from shapeprop.visualize.views import MASK_THRESHOLD, Detection

HEAT_CMAP = "inferno"
OUTSIDE_GREY = 0.85  # pixels of a crop that lie outside the image
PRED_COLOUR = (1.0, 0.35, 0.0)  # orange: predicted masks
GT_COLOUR = (0.1, 0.85, 0.1)  # green: ground truth
INSTANCE_COLOURS = [
    (0.12, 0.47, 0.71),
    (1.0, 0.5, 0.05),
    (0.84, 0.15, 0.16),
    (0.58, 0.40, 0.74),
    (0.09, 0.75, 0.81),
    (0.89, 0.47, 0.76),
    (0.74, 0.74, 0.13),
    (0.55, 0.34, 0.29),
]


def instance_colours(count: int) -> list[tuple[float, float, float]]:
    """One colour per instance, cycling through `INSTANCE_COLOURS`."""
    return [INSTANCE_COLOURS[i % len(INSTANCE_COLOURS)] for i in range(count)]


def panel_image(image: np.ndarray, window: Sequence[float], size: int) -> np.ndarray:
    """The RGB crop [size, size, 3] in [0, 1]; what lies outside the image is light grey."""
    rgba = np.concatenate([image.astype(np.float32) / 255, np.ones((*image.shape[:2], 1), np.float32)], -1)
    out = resample(rgba, window, size)
    inside = np.clip(out[..., 3:], 0, 1)
    return np.clip(out[..., :3] + (1 - inside) * OUTSIDE_GREY, 0, 1)


def grey(rgb: np.ndarray, dim: float = 0.55) -> np.ndarray:
    """`rgb` as dimmed grey levels (the background of a heat map)."""
    levels = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat((levels * dim)[..., None], 3, axis=-1)


def overlay(rgb: np.ndarray, masks: Sequence[np.ndarray], colours: Sequence[Sequence[float]], alpha=0.45):
    """`rgb` with each mask blended in its colour."""
    out = rgb.copy()
    for mask, colour in zip(masks, colours, strict=True):
        out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, dtype=np.float32)
    return out


def show(ax, rgb: np.ndarray, size: int) -> None:
    """`rgb` filling the axes, one data unit per panel pixel (origin top-left)."""
    ax.imshow(rgb, extent=(0, size, size, 0), interpolation="nearest")
    ax.set_xlim(0, size)
    ax.set_ylim(size, 0)


def draw_box(ax, box: np.ndarray, colour, style: str = "-", width: float = 1.6) -> None:
    x0, y0, x1, y1 = (float(v) for v in box)
    ax.add_patch(
        Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linestyle=style, linewidth=width)
    )


def contour(ax, mask: np.ndarray, colour, width: float = 1.4) -> None:
    if mask.any() and not mask.all():
        centres = np.arange(mask.shape[0]) + 0.5  # pixel (i, j) is drawn over [j, j+1) x [i, i+1)
        ax.contour(centres, centres, mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=width)


def show_masks(
    ax, rgb: np.ndarray, masks: Sequence[np.ndarray], colours, size: int, width: float = 1.4
) -> None:
    """`rgb` with `masks` blended in and outlined, each in its colour."""
    show(ax, overlay(rgb, masks, colours), size)
    for mask, colour in zip(masks, colours, strict=True):
        contour(ax, mask, colour, width)


def empty(ax, size: int, text: str) -> None:
    """A blank panel that says why it is blank."""
    show(ax, np.full((size, size, 3), 0.95, np.float32), size)
    ax.text(size / 2, size / 2, text, ha="center", va="center", fontsize=9, color="0.35")


def draw_detections(
    ax, base: np.ndarray, detections: Sequence[Detection], window: Sequence[float], size: int
) -> None:
    """`base` (the panel of `window`) with each detection's mask (p > `MASK_THRESHOLD`) blended in
    and outlined, its box, and its class and score, one colour per detection."""
    masks = [resample_mask(d.mask, window, size, MASK_THRESHOLD) for d in detections]
    colours = instance_colours(len(detections))
    show_masks(ax, base, masks, colours, size)
    for det, colour in zip(detections, colours, strict=True):
        box = window_box(det.box, window, size)
        draw_box(ax, box, colour, "-", 1.0)
        ax.text(
            float(box[0]) + 2,
            float(box[1]) + 2,
            f"{det.label} {det.score:.2f}",
            fontsize=7,
            color="white",
            va="top",
            clip_on=True,
            bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "linewidth": 0},
        )
