"""`render_detections`: one image, one row per detection: the crop with the detected box, the
instance saliency and shape activation (ShapeProp), the predicted mask and the matched GT mask."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from shapeprop.visualize.geometry import (
    image_window,
    mask_iou,
    match_ground_truth,
    paste_roi_map,
    resample_mask,
    square_crop,
    window_box,
)
from shapeprop.visualize.layout import detection_columns, detection_layout
from shapeprop.visualize.panels import (
    GT_COLOUR,
    HEAT_CMAP,
    PRED_COLOUR,
    contour,
    draw_box,
    empty,
    grey,
    panel_image,
    show,
    show_masks,
)
from shapeprop.visualize.views import MASK_THRESHOLD, ImageView


def render_detections(
    view: ImageView,
    title: str,
    max_detections: int = 3,
    min_score: float = 0.0,
    panel: int = 192,
    with_maps: bool | None = None,
) -> Figure:
    """One row per detection of `view` (at most `max_detections` with score >= `min_score`, best
    first): crop with the detected box, instance saliency and shape activation (ShapeProp; one
    shared 0-1 colour scale, colour bar at the bottom), predicted mask, matched ground-truth mask.

    `with_maps` None = whether the detections carry ShapeProp maps.
    """
    dets = view.shown(min_score, max_detections)
    with_maps = view.has_maps if with_maps is None else with_maps
    columns = detection_columns(with_maps)
    layout = detection_layout(len(dets), with_maps, panel)
    fig = layout.figure(title)
    height, width = view.image.shape[:2]
    if not dets:
        ax = layout.axes(fig, layout.panel_box(0, 0))
        show(ax, panel_image(view.image, image_window(height, width), panel), panel)
        ax.set_title("whole image", fontsize=9)
        best = max((d.score for d in view.detections), default=None)
        note = f"best score {best:.2f}" if best is not None else "the model returned no detection"
        layout.text_at(
            fig,
            layout.panel_box(0, 1)[0],
            layout.panel_box(0, 1)[1] + 8,
            f"no detection with score >= {min_score:g}\n({note}; lower it with --min-score)",
            fontsize=10,
        )
        return fig
    heat = colormaps[HEAT_CMAP]
    for r, det in enumerate(dets):
        window = square_crop(det.box)
        crop = panel_image(view.image, window, panel)
        box = window_box(det.box, window, panel)
        gt_index, box_iou_value = match_ground_truth(det.box, view.ground_truth)
        pred_full = det.mask > MASK_THRESHOLD
        pred = resample_mask(det.mask, window, panel, MASK_THRESHOLD)
        layout.row_header(fig, r, f"detection {r + 1}: {det.label}, score {det.score:.2f}")
        col = 0
        ax = layout.axes(fig, layout.panel_box(r, col))
        show(ax, crop, panel)
        draw_box(ax, box, "yellow")
        ax.set_title(columns[col], fontsize=9)
        col += 1
        if with_maps:
            for name, roi_map in (("saliency", det.saliency), ("shape activation", det.shape_activation)):
                ax = layout.axes(fig, layout.panel_box(r, col))
                if roi_map is None:
                    empty(ax, panel, f"no {name} map")
                else:
                    pasted = paste_roi_map(roi_map, det.box, window, panel)
                    inside = np.zeros((panel, panel), np.float32)
                    bx0, by0, bx1, by1 = np.clip(np.round(box), 0, panel).astype(int)
                    inside[by0:by1, bx0:bx1] = 0.8
                    show(ax, grey(crop), panel)
                    ax.imshow(
                        pasted,
                        cmap=heat,
                        vmin=0.0,
                        vmax=1.0,
                        alpha=inside,
                        extent=(0, panel, panel, 0),
                        interpolation="bilinear",
                    )
                    draw_box(ax, box, "white", "--", 1.0)
                    ax.set_title(f"{columns[col]}\nmax {float(roi_map.max()):.2f}", fontsize=9)
                col += 1
        ax = layout.axes(fig, layout.panel_box(r, col))
        show_masks(ax, crop, [pred], [PRED_COLOUR], panel, 1.8)
        ax.set_title(columns[col], fontsize=9)
        col += 1
        ax = layout.axes(fig, layout.panel_box(r, col))
        if gt_index is None:
            empty(ax, panel, f"no ground truth\n(best box IoU {box_iou_value:.2f} < 0.5)")
            ax.set_title(columns[col], fontsize=9)
        else:
            gt_mask = view.ground_truth.masks[gt_index]
            show_masks(ax, crop, [resample_mask(gt_mask, window, panel)], [GT_COLOUR], panel)
            contour(ax, pred, PRED_COLOUR, 0.9)
            iou = mask_iou(pred_full, gt_mask)
            ax.set_title(
                f"{columns[col]}: {view.ground_truth.labels[gt_index]}\nmask IoU {iou:.2f} (orange: predicted)",
                fontsize=9,
            )
    if with_maps:
        x0, y0, x1, y1 = layout.colorbar_box(1, 2)
        cax = layout.axes(fig, (x0, y0, x1, y1))
        bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), heat), cax=cax, orientation="horizontal")
        bar.set_label("saliency / shape activation (probability, shared scale)", fontsize=9)
        bar.ax.tick_params(labelsize=8)
    return fig
