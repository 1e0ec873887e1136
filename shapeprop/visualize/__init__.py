"""Qualitative figures of a detector (paper Figs. 2, 7, 8): per detection, and two models side by side.

`predict_views` runs a detector on a few records (the evaluation's per-image loop,
`shapeprop.eval.inference.model_inputs`) and keeps, per image, the picture, its ground truth and the
detections (box, class, score, pasted mask probabilities and, with ShapeProp, the instance
saliency and shape activation RoI maps). Renderers turn these into PNG figures with
matplotlib (no pyplot global state):

- `render_detections`: one image, one row per detection: the crop with the detected box, the
  instance saliency, the shape activation (heat maps on one shared 0-1 colour scale, with a
  colour bar), the predicted mask and the matched ground-truth mask.
- `render_comparison`: one row per image: the ground truth, then the predicted masks of each
  model (e.g. Mask R-CNN vs Mask R-CNN + ShapeProp, as in Fig. 7).
- `render_overlay`: one whole image with the detections over it (`shapeprop-bench predict`).

Crops are square windows around the box, resampled bilinearly (RoIAlign) to the panel size, so
small objects are readable; pixels outside the image show as light grey. Every figure has a
fixed pixel layout (`GridLayout`), so a panel's position in the PNG is known.

Modules: `views` (what is drawn), `predict` (running the detector), `geometry` (crops, resampling,
GT matching), `layout` (pixel layouts, PNG output), `panels` (drawing on one panel, colours),
`detections`, `comparison` and `overlay` (the renderers).
"""

from shapeprop.visualize.comparison import render_comparison
from shapeprop.visualize.detections import render_detections
from shapeprop.visualize.geometry import (
    image_window,
    mask_iou,
    match_ground_truth,
    paste_roi_map,
    resample,
    resample_mask,
    square_crop,
    window_box,
)
from shapeprop.visualize.layout import (
    DPI,
    GridLayout,
    comparison_layout,
    detection_columns,
    detection_layout,
    save_png,
)
from shapeprop.visualize.overlay import overlay_layout, render_overlay
from shapeprop.visualize.panels import GT_COLOUR, HEAT_CMAP, INSTANCE_COLOURS, OUTSIDE_GREY, PRED_COLOUR
from shapeprop.visualize.predict import predict_views
from shapeprop.visualize.views import (
    MASK_THRESHOLD,
    Detection,
    GroundTruth,
    ImageView,
    detections_from_output,
    ground_truth,
)

__all__ = [
    "DPI",
    "GT_COLOUR",
    "HEAT_CMAP",
    "INSTANCE_COLOURS",
    "MASK_THRESHOLD",
    "OUTSIDE_GREY",
    "PRED_COLOUR",
    "Detection",
    "GridLayout",
    "GroundTruth",
    "ImageView",
    "comparison_layout",
    "detection_columns",
    "detection_layout",
    "detections_from_output",
    "ground_truth",
    "image_window",
    "mask_iou",
    "match_ground_truth",
    "overlay_layout",
    "paste_roi_map",
    "predict_views",
    "render_comparison",
    "render_detections",
    "render_overlay",
    "resample",
    "resample_mask",
    "save_png",
    "square_crop",
    "window_box",
]
