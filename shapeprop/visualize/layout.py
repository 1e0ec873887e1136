"""The fixed pixel layout of every figure (`GridLayout`), so a panel's position in the PNG is
known, the layouts of the two figures, and writing a figure as a PNG at its pixel size."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from shapeprop.files import write_atomic
from shapeprop.visualize.views import MASK_THRESHOLD

DPI = 100


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

    def figure(self, title: str | None = None) -> Figure:
        """An empty figure of this layout's pixel size, with `title` (if any) in its title band."""
        width, height = self.size
        fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
        FigureCanvasAgg(fig)
        if title is not None:
            self.text_at(fig, self.margin_px, 10, title, fontsize=11, fontweight="bold", linespacing=1.5)
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

    def row_header(self, fig: Figure, row: int, text: str) -> None:
        """`text` in the header band of `row`, above its panel titles."""
        x0, y0 = self.panel_box(row, 0)[:2]
        self.text_at(
            fig, x0, y0 - self.panel_title_px - self.row_header_px + 2, text, fontsize=10, fontweight="bold"
        )


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


def comparison_layout(rows: int, models: int, panel: int = 256) -> GridLayout:
    """The layout `render_comparison` uses: `rows` images x (ground truth + `models` columns)."""
    return GridLayout(rows=max(rows, 1), cols=1 + models, panel=panel, row_header_px=22, panel_title_px=20)


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG at its pixel size, atomically (a temporary file renamed into place)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor=fig.get_facecolor())
    return write_atomic(path, buffer.getvalue())
