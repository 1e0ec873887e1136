"""Qualitative figures of a detector (paper Figs. 2, 7, 8): per detection, and two models side by side.

`predict_views` runs a detector on a few records and keeps, per image, the picture, its
ground truth and the detections (box, class, score, pasted mask probabilities and, with
ShapeProp, the instance saliency and shape activation RoI maps). Two renderers turn these into
PNG figures with matplotlib (no pyplot global state):

- `render_detections`: one image, one row per detection: the crop with the detected box, the
  instance saliency, the shape activation (heat maps on one shared 0-1 colour scale, with a
  colour bar), the predicted mask and the matched ground-truth mask.
- `render_comparison`: one row per image: the ground truth, then the predicted masks of each
  model (e.g. Mask R-CNN vs Mask R-CNN + ShapeProp, as in Fig. 7).

Crops are square windows around the box, resampled bilinearly (RoIAlign) to the panel size, so
small objects are readable; pixels outside the image show as light grey. Every figure has a
fixed pixel layout (`GridLayout`), so a panel's position in the PNG is known.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from torch import nn
from torchvision.ops import box_iou, roi_align

from shapeprop.data.loading import DetectionDataset
from shapeprop.data.masks import annotation_to_mask
from shapeprop.eval.best_overlap import paste_maps
from shapeprop.eval.coco import bbox_xywh
from shapeprop.files import write_atomic

DPI = 100
HEAT_CMAP = "inferno"
MASK_THRESHOLD = 0.5  # as in evaluation (`instances_to_results`: p > 0.5)
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

# --------------------------------------------------------------------------- what is drawn


@dataclass
class Detection:
    """One detection in original image coordinates."""

    box: np.ndarray  # [4] XYXY
    label: str
    score: float
    mask: np.ndarray  # [H, W] mask probabilities, pasted into the image
    saliency: np.ndarray | None = None  # [S, S] RoI map over `box` (ShapeProp only)
    shape_activation: np.ndarray | None = None  # [S, S] RoI map over `box` (ShapeProp only)


@dataclass
class GroundTruth:
    """The non-crowd annotations of an image that have a mask."""

    boxes: np.ndarray  # [G, 4] XYXY
    labels: list[str]
    masks: np.ndarray  # [G, H, W] bool


@dataclass
class ImageView:
    """One image with its ground truth and a model's detections (highest score first)."""

    image_id: Any
    image: np.ndarray  # [H, W, 3] uint8
    ground_truth: GroundTruth
    detections: list[Detection] = field(default_factory=list)

    @property
    def has_maps(self) -> bool:
        return any(d.saliency is not None for d in self.detections)


def ground_truth(record: dict[str, Any], class_names: Sequence[str]) -> GroundTruth:
    """Boxes, class names and binary masks of the record's non-crowd annotations that have a mask."""
    height, width = int(record["height"]), int(record["width"])
    anns = [
        a for a in record.get("annotations", []) if not a.get("iscrowd") and a.get("segmentation") is not None
    ]
    boxes = np.array([bbox_xywh(a) for a in anns], dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    masks = np.zeros((len(anns), height, width), dtype=bool)
    for i, ann in enumerate(anns):
        masks[i] = annotation_to_mask(ann, height, width).astype(bool)
    return GroundTruth(boxes, [class_names[a["category_id"]] for a in anns], masks)


def detections_from_output(output: dict[str, torch.Tensor], class_names: Sequence[str]) -> list[Detection]:
    """Detections of one detector output (boxes, 1-based labels, scores, masks [N,1,H,W], and with
    ShapeProp `saliency` / `shape_activation` [N,1,S,S]), highest score first."""
    order = torch.argsort(output["scores"].detach().cpu(), descending=True).tolist()
    maps = {k: output[k].detach().float().cpu() for k in ("saliency", "shape_activation") if k in output}
    out = []
    for i in order:
        label = int(output["labels"][i])
        out.append(
            Detection(
                box=output["boxes"][i].detach().float().cpu().numpy(),
                label=class_names[label - 1] if 0 < label <= len(class_names) else f"class {label}",
                score=float(output["scores"][i]),
                mask=output["masks"][i, 0].detach().float().cpu().numpy(),
                saliency=maps["saliency"][i, 0].numpy() if "saliency" in maps else None,
                shape_activation=(
                    maps["shape_activation"][i, 0].numpy() if "shape_activation" in maps else None
                ),
            )
        )
    return out


@torch.no_grad()
def predict_views(
    model: nn.Module,
    records: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    min_size: int,
    max_size: int,
    device: torch.device | str = "cpu",
) -> list[ImageView]:
    """Run `model` (a detector built by `build_detector`) on each record, one image at a time, as the
    evaluation does (resized to `min_size`/`max_size`, results in original image coordinates)."""
    device = torch.device(device)
    model.eval().to(device)
    dataset = DetectionDataset(list(records), min_size, max_size, hflip=False, train=False)
    views = []
    for i, record in enumerate(records):
        pixels, target = dataset[i]
        output = model([pixels.to(device)], original_sizes=[tuple(target["orig_size"])])[0]
        with Image.open(record["file_name"]) as picture:
            image = np.asarray(picture.convert("RGB"))
        views.append(
            ImageView(
                record["image_id"],
                image,
                ground_truth(record, class_names),
                detections_from_output(output, class_names),
            )
        )
    return views


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


# --------------------------------------------------------------------------- geometry


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


def _panel_image(image: np.ndarray, window: Sequence[float], size: int) -> np.ndarray:
    """The RGB crop [size, size, 3] in [0, 1]; what lies outside the image is light grey."""
    rgba = np.concatenate([image.astype(np.float32) / 255, np.ones((*image.shape[:2], 1), np.float32)], -1)
    out = resample(rgba, window, size)
    inside = np.clip(out[..., 3:], 0, 1)
    return np.clip(out[..., :3] + (1 - inside) * OUTSIDE_GREY, 0, 1)


def _grey(rgb: np.ndarray, dim: float = 0.55) -> np.ndarray:
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat((grey * dim)[..., None], 3, axis=-1)


def _overlay(rgb: np.ndarray, masks: Sequence[np.ndarray], colours: Sequence[Sequence[float]], alpha=0.45):
    out = rgb.copy()
    for mask, colour in zip(masks, colours, strict=True):
        out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, dtype=np.float32)
    return out


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class GridLayout:
    """Pixel layout of a grid of square panels: a figure title band, then per row a row header and
    panel titles above the panels; optionally a horizontal colour bar at the bottom."""

    rows: int
    cols: int
    panel: int = 192
    title_px: int = 60
    row_header_px: int = 22
    panel_title_px: int = 32
    gap_px: int = 12
    margin_px: int = 12
    colorbar_px: int = 0  # height of the colour-bar band (0 = none)

    @property
    def row_px(self) -> int:
        return self.row_header_px + self.panel_title_px + self.panel + self.gap_px

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the figure in pixels."""
        width = 2 * self.margin_px + self.cols * self.panel + (self.cols - 1) * self.gap_px
        height = self.title_px + self.rows * self.row_px + self.colorbar_px + self.margin_px
        return width, height

    def panel_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of a panel in pixels, from the top-left corner of the figure."""
        x0 = self.margin_px + col * (self.panel + self.gap_px)
        y0 = self.title_px + row * self.row_px + self.row_header_px + self.panel_title_px
        return x0, y0, x0 + self.panel, y0 + self.panel

    def colorbar_box(self, first_col: int, last_col: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the colour bar under columns `first_col`..`last_col`."""
        x0 = self.panel_box(0, first_col)[0]
        x1 = self.panel_box(0, last_col)[2]
        y0 = self.title_px + self.rows * self.row_px + 8
        return x0, y0, x1, y0 + 12

    def figure(self) -> Figure:
        width, height = self.size
        fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
        FigureCanvasAgg(fig)
        return fig

    def axes(self, fig: Figure, box: tuple[int, int, int, int]):
        """Axes at pixel `box` (no ticks)."""
        width, height = self.size
        x0, y0, x1, y1 = box
        ax = fig.add_axes((x0 / width, 1 - y1 / height, (x1 - x0) / width, (y1 - y0) / height))
        ax.set_xticks([])
        ax.set_yticks([])
        return ax

    def text_at(self, fig: Figure, x: float, y: float, text: str, **kwargs: Any) -> None:
        """Text whose top-left corner is at pixel (x, y)."""
        width, height = self.size
        fig.text(x / width, 1 - y / height, text, ha="left", va="top", **kwargs)


def _show(ax, rgb: np.ndarray, size: int) -> None:
    ax.imshow(rgb, extent=(0, size, size, 0), interpolation="nearest")
    ax.set_xlim(0, size)
    ax.set_ylim(size, 0)


def _draw_box(ax, box: np.ndarray, colour, style: str = "-", width: float = 1.6) -> None:
    x0, y0, x1, y1 = (float(v) for v in box)
    ax.add_patch(
        Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linestyle=style, linewidth=width)
    )


def _contour(ax, mask: np.ndarray, colour, width: float = 1.4) -> None:
    if mask.any() and not mask.all():
        centres = np.arange(mask.shape[0]) + 0.5  # pixel (i, j) is drawn over [j, j+1) x [i, i+1)
        ax.contour(centres, centres, mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=width)


def _empty(ax, size: int, text: str) -> None:
    _show(ax, np.full((size, size, 3), 0.95, np.float32), size)
    ax.text(size / 2, size / 2, text, ha="center", va="center", fontsize=9, color="0.35")


# --------------------------------------------------------------------------- figures


def detection_columns(with_maps: bool) -> list[str]:
    """Panel titles of a detection row, in order."""
    maps = ["instance saliency", "shape activation"] if with_maps else []
    return ["crop + detected box", *maps, f"predicted mask (p > {MASK_THRESHOLD:g})", "ground-truth mask"]


def detection_layout(rows: int, with_maps: bool, panel: int = 192) -> GridLayout:
    """The layout `render_detections` uses for `rows` detections."""
    return GridLayout(
        rows=max(rows, 1),
        cols=len(detection_columns(with_maps)),
        panel=panel,
        colorbar_px=48 if with_maps else 0,
    )


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
    dets = [d for d in view.detections if d.score >= min_score][:max_detections]
    with_maps = view.has_maps if with_maps is None else with_maps
    columns = detection_columns(with_maps)
    layout = detection_layout(len(dets), with_maps, panel)
    fig = layout.figure()
    layout.text_at(fig, layout.margin_px, 10, title, fontsize=11, fontweight="bold", linespacing=1.5)
    height, width = view.image.shape[:2]
    if not dets:
        ax = layout.axes(fig, layout.panel_box(0, 0))
        _show(ax, _panel_image(view.image, image_window(height, width), panel), panel)
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
        crop = _panel_image(view.image, window, panel)
        box = window_box(det.box, window, panel)
        gt_index, box_iou_value = match_ground_truth(det.box, view.ground_truth)
        pred_full = det.mask > MASK_THRESHOLD
        pred = resample(det.mask, window, panel) > MASK_THRESHOLD
        header = f"detection {r + 1}: {det.label}, score {det.score:.2f}"
        x0, y0 = layout.panel_box(r, 0)[:2]
        layout.text_at(
            fig,
            x0,
            y0 - layout.panel_title_px - layout.row_header_px + 2,
            header,
            fontsize=10,
            fontweight="bold",
        )
        col = 0
        ax = layout.axes(fig, layout.panel_box(r, col))
        _show(ax, crop, panel)
        _draw_box(ax, box, "yellow")
        ax.set_title(columns[col], fontsize=9)
        col += 1
        if with_maps:
            for name, roi_map in (("saliency", det.saliency), ("shape activation", det.shape_activation)):
                ax = layout.axes(fig, layout.panel_box(r, col))
                if roi_map is None:
                    _empty(ax, panel, f"no {name} map")
                else:
                    pasted = paste_roi_map(roi_map, det.box, window, panel)
                    inside = np.zeros((panel, panel), np.float32)
                    bx0, by0, bx1, by1 = np.clip(np.round(box), 0, panel).astype(int)
                    inside[by0:by1, bx0:bx1] = 0.8
                    _show(ax, _grey(crop), panel)
                    ax.imshow(
                        pasted,
                        cmap=heat,
                        vmin=0.0,
                        vmax=1.0,
                        alpha=inside,
                        extent=(0, panel, panel, 0),
                        interpolation="bilinear",
                    )
                    _draw_box(ax, box, "white", "--", 1.0)
                    ax.set_title(f"{columns[col]}\nmax {float(roi_map.max()):.2f}", fontsize=9)
                col += 1
        ax = layout.axes(fig, layout.panel_box(r, col))
        _show(ax, _overlay(crop, [pred], [PRED_COLOUR]), panel)
        _contour(ax, pred, PRED_COLOUR, 1.8)
        ax.set_title(columns[col], fontsize=9)
        col += 1
        ax = layout.axes(fig, layout.panel_box(r, col))
        if gt_index is None:
            _empty(ax, panel, f"no ground truth\n(best box IoU {box_iou_value:.2f} < 0.5)")
            ax.set_title(columns[col], fontsize=9)
        else:
            gt_mask = view.ground_truth.masks[gt_index]
            gt = resample(gt_mask.astype(np.float32), window, panel) > 0.5
            _show(ax, _overlay(crop, [gt], [GT_COLOUR]), panel)
            _contour(ax, gt, GT_COLOUR)
            _contour(ax, pred, PRED_COLOUR, 0.9)
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


def comparison_layout(rows: int, models: int, panel: int = 256) -> GridLayout:
    """The layout `render_comparison` uses: `rows` images x (ground truth + `models` columns)."""
    return GridLayout(rows=max(rows, 1), cols=1 + models, panel=panel, row_header_px=22, panel_title_px=20)


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
    fig = layout.figure()
    layout.text_at(fig, layout.margin_px, 10, title, fontsize=11, fontweight="bold", linespacing=1.5)
    for r in range(rows):
        first = views[0][r]
        for other in views[1:]:
            if other[r].image_id != first.image_id:
                raise ValueError(f"row {r}: image {first.image_id} vs {other[r].image_id}")
        height, width = first.image.shape[:2]
        window = image_window(height, width)
        base = _panel_image(first.image, window, panel)
        x0, y0 = layout.panel_box(r, 0)[:2]
        layout.text_at(
            fig,
            x0,
            y0 - layout.panel_title_px - layout.row_header_px + 2,
            f"image {first.image_id}",
            fontsize=10,
            fontweight="bold",
        )
        gt = first.ground_truth
        gt_masks = [resample(m.astype(np.float32), window, panel) > 0.5 for m in gt.masks]
        colours = [INSTANCE_COLOURS[i % len(INSTANCE_COLOURS)] for i in range(len(gt_masks))]
        ax = layout.axes(fig, layout.panel_box(r, 0))
        _show(ax, _overlay(base, gt_masks, colours), panel)
        for mask, colour in zip(gt_masks, colours, strict=True):
            _contour(ax, mask, colour)
        ax.set_title(f"ground truth ({len(gt_masks)} mask{'s' if len(gt_masks) != 1 else ''})", fontsize=9)
        for m, (model_views, name) in enumerate(zip(views, names, strict=True)):
            view = model_views[r]
            dets = [d for d in view.detections if d.score >= min_score][:max_detections]
            masks = [resample(d.mask, window, panel) > MASK_THRESHOLD for d in dets]
            colours = [INSTANCE_COLOURS[i % len(INSTANCE_COLOURS)] for i in range(len(dets))]
            ax = layout.axes(fig, layout.panel_box(r, 1 + m))
            _show(ax, _overlay(base, masks, colours), panel)
            for det, mask, colour in zip(dets, masks, colours, strict=True):
                _contour(ax, mask, colour)
                box = window_box(det.box, window, panel)
                _draw_box(ax, box, colour, "-", 1.0)
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
            ax.set_title(f"{name} ({len(dets)} det. >= {min_score:g})", fontsize=9)
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG at its pixel size, atomically (a temporary file renamed into place)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor=fig.get_facecolor())
    return write_atomic(path, buffer.getvalue())
