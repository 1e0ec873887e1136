"""Where Table 1's mask AP comes from, by IoU threshold (issue 41, targets 2 and 3): per val run of
Table 1, on the unseen classes, mask AP at IoU 0.5, 0.75 and 0.9 (from the run's COCO match tables)
beside the share of GT instances whose mask on the GT box reaches that IoU (from its
`gt_box_masks.csv`). Mask AP averages 10 thresholds from 0.5 to 0.95, so a row whose masks are
more often roughly right (IoU@GT 0.5) can still score below one with more masks close to exact.

    .venv/bin/python reports/mini/ap_by_threshold.py runs/mini/table1 --out reports/mini/ap-by-threshold.csv

The folder holds the run folders of `run.sh`; the runs read are the Table 1 runs of `runs.jsonl`
(their `method` and `row` tags, as `tools/mini_targets.py` reads them) whose folder is there. It
reads the val results already reported and trains or evaluates nothing: a description of them,
not a choice of the protocol.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from shapeprop.config import ExperimentConfig
from shapeprop.data import source
from shapeprop.eval.coco import resolve_categories
from shapeprop.eval.image_ap import GT_TABLE, MATCHES_TABLE, ap_on_images, at_iou_threshold, image_ids

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from mini_targets import table1_run_folders  # noqa: E402

THRESHOLDS = {0.5: 0, 0.75: 5, 0.9: 8}  # IoU -> index in pycocotools' iouThrs


def run_line(folder: Path, unseen: list[int]) -> dict[str, float]:
    """Mask AP (all thresholds, and each of THRESHOLDS) and the IoU@GT shares, unseen classes."""
    detections = pd.read_csv(folder / f"{MATCHES_TABLE}.csv")
    gts = pd.read_csv(folder / f"{GT_TABLE}.csv")
    weights = np.ones(len(image_ids(gts)), dtype=int)
    gt_boxes = pd.read_csv(folder / "gt_box_masks.csv")
    iou = gt_boxes.loc[gt_boxes["category_id"].isin(unseen), "iou"]
    line = {
        "mask_ap": ap_on_images(detections, gts, weights, "segm", category_ids=unseen)[0],
        "iou_at_gt": 100 * iou.mean(),
    }
    for threshold, index in THRESHOLDS.items():
        name = f"{round(100 * threshold)}"
        one = at_iou_threshold(detections, index)
        line[f"ap{name}"] = ap_on_images(one, gts, weights, "segm", category_ids=unseen)[0]
        line[f"gt_iou_ge{name}"] = 100 * (iou >= threshold).mean()
    return line


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs_dir", type=Path, help="run.sh's run folders of Table 1 (runs/mini/table1)")
    parser.add_argument(
        "--archive", type=Path, default=Path("reports/mini/runs.jsonl"), help="the runs' archive"
    )
    parser.add_argument("--out", type=Path, required=True, help="CSV: one line per run")
    args = parser.parse_args()
    lines, unseen_of = [], {}
    for run, folder, direction, row in table1_run_folders(args.archive, args.runs_dir):
        if direction not in unseen_of:
            cfg = ExperimentConfig(**yaml.safe_load((folder / "config.yaml").read_text()))
            meta = source.load_data(cfg.data, cfg.data.test_split).metadata
            unseen_of[direction] = resolve_categories(cfg.eval.categories, meta.classes, meta.class_groups)
        line = {"direction": direction, "row": row, "seed": int(run["params"]["seed"])}
        lines.append({**line, **run_line(folder, unseen_of[direction]), "run": folder.name})
    if not lines:
        raise SystemExit(f"{args.runs_dir}: no finished Table 1 run of {args.archive} is there")
    frame = pd.DataFrame(lines).sort_values(["direction", "row", "seed"])
    frame.to_csv(args.out, index=False, float_format="%.2f")
    columns = ["mask_ap", "ap50", "ap75", "ap90", "iou_at_gt", "gt_iou_ge50", "gt_iou_ge75", "gt_iou_ge90"]
    print(frame.groupby(["direction", "row"])[columns].mean().round(1).to_string())


if __name__ == "__main__":
    main()
