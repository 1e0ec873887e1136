"""`render_comparison`: one row per image: the ground truth, then the predicted masks of each model
(e.g. Mask R-CNN vs Mask R-CNN + ShapeProp, as in Fig. 7)."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from shapeprop.visualize.geometry import image_window, resample_mask
from shapeprop.visualize.layout import comparison_layout
from shapeprop.visualize.panels import draw_detections, instance_colours, panel_image, show_masks
from shapeprop.visualize.views import ImageView


def render_comparison(
    views: Sequence[Sequence[ImageView]],
    names: Sequence[str],
    title: str,
    max_detections: int = 10,
    min_score: float = 0.5,
    panel: int = 256,
) -> Figure:
    """One row per image: the ground-truth masks, then each model's predicted masks (score >=
    `min_score`, at most `max_detections`) with boxes and labels; `views[m][i]` is model `m` on image
    `i` (the same images, in the same order, for every model) and `names[m]` its column title."""
    if len(views) != len(names):
        raise ValueError(f"{len(views)} models but {len(names)} names")
    counts = {len(v) for v in views}
    if len(counts) != 1:
        raise ValueError(f"models were run on different numbers of images: {sorted(counts)}")
    rows = counts.pop()
    layout = comparison_layout(rows, len(views), panel)
    fig = layout.figure(title)
    for r in range(rows):
        first = views[0][r]
        for other in views[1:]:
            if other[r].image_id != first.image_id:
                raise ValueError(f"row {r}: image {first.image_id} vs {other[r].image_id}")
        height, width = first.image.shape[:2]
        window = image_window(height, width)
        base = panel_image(first.image, window, panel)
        layout.row_header(fig, r, f"image {first.image_id}")
        gt_masks = [resample_mask(m, window, panel) for m in first.ground_truth.masks]
        ax = layout.axes(fig, layout.panel_box(r, 0))
        show_masks(ax, base, gt_masks, instance_colours(len(gt_masks)), panel)
        ax.set_title(f"ground truth ({len(gt_masks)} mask{'s' if len(gt_masks) != 1 else ''})", fontsize=9)
        for m, (model_views, name) in enumerate(zip(views, names, strict=True)):
            dets = model_views[r].shown(min_score, max_detections)
            ax = layout.axes(fig, layout.panel_box(r, 1 + m))
            draw_detections(ax, base, dets, window, panel)
            ax.set_title(f"{name} ({len(dets)} det. >= {min_score:g})", fontsize=9)
    return fig
