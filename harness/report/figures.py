"""Figures 6 (data-fraction curves) and 9 (best-overlap density by object size).

Built on `matplotlib.figure.Figure` directly (no pyplot state), saved as PNG and SVG of a
fixed size: FIGSIZE inches at DPI.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from shapeprop.files import write_atomic

if TYPE_CHECKING:
    import pandas

DPI = 100
FIG6_SIZE = (12.0, 3.6)
FIG9_PANEL = (5.0, 4.0)
FRACTION_PARAM = "param:data.data_fraction"
FIG6_METRICS = {"AP": "segm_AP", "AP50": "segm_AP50", "AP75": "segm_AP75"}
#: COCO's object-size buckets (area in pixels of the evaluated image).
SIZE_BUCKETS = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, math.inf))
OVERLAP_COLUMNS = ("image_id", "gt_id", "area", "saliency_iou", "shape_iou")


def save_figure(figure, base: Path) -> list[Path]:
    """Write `base`.png and `base`.svg atomically; returns both paths."""
    paths = []
    for fmt in ("png", "svg"):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=fmt, dpi=DPI)
        paths.append(write_atomic(base.with_name(f"{base.name}.{fmt}"), buffer.getvalue()))
    return paths


def fraction_label(value: float) -> str:
    """1/10, 1/50, 1/100 ... as the paper writes them; other values as decimals."""
    frac = Fraction(value).limit_denominator(10_000)
    return f"{frac.numerator}/{frac.denominator}" if frac.numerator == 1 else f"{value:g}"


def fraction_points(runs: pandas.DataFrame) -> pandas.DataFrame:
    """Mean, std and n over seeds per (row, data fraction), for each metric of FIG6_METRICS."""
    import pandas

    from harness.report.tables import aggregate

    frame = runs.copy()
    if FRACTION_PARAM not in frame:
        frame[FRACTION_PARAM] = 1.0
    frame["data_fraction"] = pandas.to_numeric(frame[FRACTION_PARAM], errors="coerce").fillna(1.0)
    stats = aggregate(frame, ["row", "data_fraction"], list(FIG6_METRICS.values()))
    return stats.sort_values(["row", "data_fraction"], kind="stable").reset_index(drop=True)


def figure6(points: pandas.DataFrame, title: str, base: Path) -> list[Path]:
    """Mask AP vs fraction of training data (log x axis), one line per row, std error bars."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIG6_SIZE, dpi=DPI, layout="constrained")
    axes = figure.subplots(1, len(FIG6_METRICS))
    fractions = sorted(points["data_fraction"].unique()) if len(points) else []
    for ax, (column, metric) in zip(axes, FIG6_METRICS.items(), strict=True):
        for row, line in points.groupby("row", sort=False):
            have = line[line[metric + "_n"] > 0]
            ax.errorbar(
                have["data_fraction"],
                have[metric],
                yerr=have[metric + "_std"].fillna(0.0),
                marker="o",
                capsize=3,
                label=row,
            )
        ax.set_xscale("log")
        ax.set_xticks(fractions, [fraction_label(f) for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("fraction of training data")
        ax.set_ylabel(f"mask {column}")
        ax.grid(alpha=0.3)
    if len(points):
        axes[0].legend(fontsize="small")
    figure.suptitle(title)
    return save_figure(figure, base)


def size_bucket(area: pandas.Series) -> pandas.Series:
    import pandas

    edges = [low for _, low, _ in SIZE_BUCKETS] + [math.inf]
    return pandas.cut(area, edges, right=False, labels=[name for name, _, _ in SIZE_BUCKETS])


def overlap_summary(overlaps: pandas.DataFrame) -> pandas.DataFrame:
    """Per row and object size: n and the mean best overlap of saliency and of shape activation."""
    frame = overlaps.assign(size=size_bucket(overlaps["area"]))
    grouped = frame.groupby(["row", "size"], observed=False, sort=True)
    out = grouped.agg(
        n=("area", "size"), saliency_iou=("saliency_iou", "mean"), shape_iou=("shape_iou", "mean")
    )
    return out.reset_index()


def figure9(overlaps: pandas.DataFrame, title: str, base: Path) -> list[Path]:
    """Density of best overlap vs object size: saliency (left) vs shape activation (right), per row."""
    import seaborn
    from matplotlib.figure import Figure

    rows = list(dict.fromkeys(overlaps["row"])) or ["(no runs)"]
    width, height = FIG9_PANEL
    figure = Figure(figsize=(2 * width, height * len(rows)), dpi=DPI, layout="constrained")
    axes = figure.subplots(len(rows), 2, squeeze=False, sharey=True)
    for ax_row, row in zip(axes, rows, strict=True):
        data = overlaps[overlaps["row"] == row]
        size = data["area"].clip(lower=1.0) ** 0.5
        for ax, column, name in zip(
            ax_row, ("saliency_iou", "shape_iou"), ("saliency", "shape activation"), strict=True
        ):
            x, y = size.to_numpy(), data[column].to_numpy()
            # A 2-D KDE needs spread in both coordinates; with too few points show the points only.
            if len(x) >= 5 and x.std() > 0 and y.std() > 0:
                seaborn.kdeplot(
                    x=x,
                    y=y,
                    ax=ax,
                    fill=True,
                    cmap="viridis",
                    log_scale=(True, False),
                    gridsize=100,
                    levels=8,
                    warn_singular=False,
                )
            ax.scatter(x, y, s=4, alpha=0.3, color="black")
            for bucket, low, _ in SIZE_BUCKETS[1:]:  # COCO's small / medium / large boundaries
                ax.axvline(low**0.5, color="grey", linestyle="--", linewidth=0.8)
                ax.text(low**0.5, 0.02, f" {bucket}", color="grey", fontsize="small")
            ax.set_xscale("log")
            ax.set_ylim(0.0, 1.0)
            ax.set_xlabel("object size (sqrt of area, px)")
            ax.set_ylabel("best overlap (IoU)")
            ax.set_title(f"{row}: {name} (n={len(x)})" if len(rows) > 1 else f"{name} (n={len(x)})")
    figure.suptitle(title)
    return save_figure(figure, base)
