"""`render_overlay`: one whole image with a model's detections drawn over it (masks, boxes, class
and score): what `shapeprop-bench predict` writes per image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from shapeprop.visualize.geometry import image_window
from shapeprop.visualize.layout import GridLayout
from shapeprop.visualize.panels import draw_detections, panel_image
from shapeprop.visualize.views import Detection

MIN_PANEL, MAX_PANEL = 256, 1024  # the panel is the image's longer side, within these


def overlay_layout(height: int, width: int) -> GridLayout:
    """One square panel about the image's size (its longer side, within 256-1024 pixels)."""
    panel = int(np.clip(max(height, width), MIN_PANEL, MAX_PANEL))
    return GridLayout(rows=1, cols=1, panel=panel, title_px=52, row_header_px=0, panel_title_px=0)


def render_overlay(
    image: np.ndarray, detections: Sequence[Detection], title: str, min_score: float = 0.5
) -> Figure:
    """`image` ([H, W, 3] uint8) with its `detections` of score >= `min_score` drawn over it."""
    height, width = image.shape[:2]
    layout = overlay_layout(height, width)
    shown = [d for d in detections if d.score >= min_score]
    fig = layout.figure(f"{title}\n{len(shown)} instance{'s' if len(shown) != 1 else ''} >= {min_score:g}")
    window = image_window(height, width)
    ax = layout.axes(fig, layout.panel_box(0, 0))
    draw_detections(ax, panel_image(image, window, layout.panel), shown, window, layout.panel)
    return fig
