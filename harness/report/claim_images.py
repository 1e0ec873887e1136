"""The image term of a claim: its runs' metrics recomputed on bootstrap draws of the test images.

A run's metric is recomputable on any draw of its test images from its per-image tables: COCO AP
from `coco_matches.csv` + `coco_gt.csv` (`shapeprop.eval.image_ap`), IoU@GT from `gt_box_masks.csv`,
an artifact metric `<file>.csv:<column>` from that table when it has an `image_id` column. A line
of a claim gets the image term only when every run it pairs has such tables and they give back the
logged value; else it keeps the seeds only, and says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harness.report import inference
from shapeprop.eval.image_ap import GT_TABLE, IMAGE_SET_CATEGORY, MATCHES_TABLE, image_ids

if TYPE_CHECKING:
    import pandas

ReadTable = Callable[[str, str], "pandas.DataFrame | None"]


def is_artifact_metric(metric: str) -> bool:
    """`<file>.csv:<column>`: a column of a CSV artifact of the run, not a logged metric."""
    return ".csv:" in metric


@dataclass(frozen=True)
class PerImage:
    """A run's metric as a function of image draw counts: `value(weights [B, len(image_ids)]) -> [B]`."""

    image_ids: np.ndarray
    value: Callable[[np.ndarray], np.ndarray]


def per_image(metric: str, run_id: str, logged: float, read_table: ReadTable) -> PerImage | str:
    """`metric` of one run recomputable on any draw of its test images, from its per-image tables;
    else why not: the run has no such table, it cannot be read, or it does not give back the
    logged value (to 1e-6; e.g. IoU@GT on a category subset of a run without its coco_gt.csv)."""
    try:
        found = recomputable(metric, run_id, read_table)
        if found is None:
            return "no per-image table"
        full = found.value(np.ones((1, len(found.image_ids)), dtype=np.int64))[0]
    except (ValueError, KeyError, TypeError):  # a malformed table: the line falls back to the seeds
        return "a per-image table that cannot be read"
    if not math.isclose(full, logged, rel_tol=0, abs_tol=1e-6):
        return "per-image tables that do not give back its logged value"
    return found


def recomputable(metric: str, run_id: str, read_table: ReadTable) -> PerImage | None:
    """`metric` of one run as a function of image draws, from its per-image tables (None: it has none)."""
    if metric in ("segm_AP", "bbox_AP"):
        detections, gts = read_table(run_id, f"{MATCHES_TABLE}.csv"), read_table(run_id, f"{GT_TABLE}.csv")
        if detections is None or gts is None:
            return None
        from shapeprop.eval.image_ap import ap_on_images

        iou_type = metric.split("_")[0]
        return PerImage(image_ids(gts), lambda w: ap_on_images(detections, gts, w, iou_type))
    if metric == "gtbox_mask_iou":
        table = read_table(run_id, "gt_box_masks.csv")
        if table is None:
            return None
        gts = read_table(run_id, f"{GT_TABLE}.csv")  # the evaluated categories, where the run has it
        if gts is not None:
            table = table[
                table["category_id"].isin(gts.loc[gts["category_id"] != IMAGE_SET_CATEGORY, "category_id"])
            ]
        return mean_per_image(table, "iou")
    if is_artifact_metric(metric):
        file, column = metric.rsplit(":", 1)
        table = read_table(run_id, file)
        if table is None or column not in table or "image_id" not in table:
            return None
        return mean_per_image(table, column)
    return None  # another logged metric: seeds only


def mean_per_image(table: pandas.DataFrame, column: str) -> PerImage:
    """100 x the mean of `column` over the objects of the drawn images (an image drawn twice counts twice)."""
    ids, where = np.unique(table["image_id"].to_numpy(), return_inverse=True)
    values = table[column].to_numpy(dtype=float)

    def value(weights: np.ndarray) -> np.ndarray:
        w = weights[:, where]
        with np.errstate(invalid="ignore", divide="ignore"):
            return 100 * (w @ values) / w.sum(axis=1)

    return PerImage(ids, value)


def image_term(
    ours: Sequence[PerImage], baseline: Sequence[PerImage], cache: dict, key: Callable[[int, str], tuple]
) -> float:
    """The image term of the mean paired difference: its standard deviation over bootstrap draws of
    the test images, the same draws for both rows and every seed. `key(i, side)` names run i's
    replicates in `cache` (a run appears in several claims) for one set of images."""
    universe = np.unique(np.concatenate([r.image_ids for r in (*ours, *baseline)]))
    images = universe.tobytes()  # replicates hold for this set of images, draws for its size
    if ("draws", len(universe)) not in cache:
        cache["draws", len(universe)] = inference.image_weights(len(universe))
    draws = cache["draws", len(universe)]
    total = 0.0
    for i, (a, b) in enumerate(zip(ours, baseline, strict=True)):
        sides = []
        for side, run in (("ours", a), ("baseline", b)):
            k = (*key(i, side), images)
            if k not in cache:
                columns = np.searchsorted(universe, run.image_ids)
                cache[k] = run.value(draws[:, columns])
            sides.append(cache[k])
        total = total + sides[0] - sides[1]
    replicates = total / len(ours)
    return float(np.nanstd(replicates, ddof=1))


def line_image_se(
    ours: pandas.DataFrame,
    base: pandas.DataFrame,
    seeds: list,
    metrics: tuple[str, str],
    read_table: ReadTable,
    cache: dict,
) -> tuple[float, str]:
    """The image term of one claim line (`seeds` paired; `metrics` of ours and of the baseline),
    or NaN and why not (the line keeps the seeds only)."""
    found: dict[str, list[PerImage]] = {"ours": [], "baseline": []}
    ids: dict[str, list[str]] = {"ours": [], "baseline": []}
    for side, runs, metric in (("ours", ours, metrics[0]), ("baseline", base, metrics[1])):
        by_seed = runs.set_index("seed")
        for seed in seeds:
            run_id, logged = by_seed.at[seed, "run_id"], float(by_seed.at[seed, metric])
            key = ("per_image", run_id, metric)
            if key not in cache:
                cache[key] = per_image(metric, run_id, logged, read_table)
            if isinstance(cache[key], str):
                return math.nan, f"seeds only (a run has {cache[key]})"
            found[side].append(cache[key])
            ids[side].append(run_id)
    why_not = _not_on_the_same_images(
        found["ours"] + found["baseline"], ids["ours"] + ids["baseline"], metrics[0], read_table, cache
    )
    if why_not:
        return math.nan, why_not
    key = lambda i, side: ("replicates", ids[side][i], metrics[0] if side == "ours" else metrics[1])  # noqa: E731
    return image_term(found["ours"], found["baseline"], cache, key), ""


def _not_on_the_same_images(
    runs: list[PerImage], run_ids: list[str], metric: str, read_table: ReadTable, cache: dict
) -> str:
    """Why the runs of a line cannot share bootstrap draws of their test images ("" when they can).

    The images each run was tested on are those of its coco_gt.csv. A table of objects (IoU@GT's
    `gt_box_masks.csv`, an artifact like `best_overlap.csv`) lists only the images that hold one
    (for best_overlap.csv: one its detections matched), so its images differ from run to run on the
    same test set; the draws are then made over the images of any run's table.
    """
    tested = set()
    for run_id in run_ids:
        if ("tested", run_id) not in cache:
            gts = read_table(run_id, f"{GT_TABLE}.csv")
            cache["tested", run_id] = None if gts is None else tuple(image_ids(gts))
        tested.add(cache["tested", run_id])
    if len(tested - {None}) > 1:
        return "seeds only (the runs were tested on different images)"
    same_tables = len({tuple(r.image_ids) for r in runs}) == 1
    # runs from before coco_gt.csv: their IoU@GT tables are taken as they are
    if same_tables or None not in tested or metric.startswith("gtbox"):
        return ""
    return "seeds only (the runs' tables list different images, and a run has no coco_gt.csv to say which it was tested on)"
