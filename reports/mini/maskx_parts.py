"""Why Mask^X trails the class-agnostic baseline (issue 41, target 2): the mask IoU on GT boxes of
finished Table 1 runs, on the synthetic *test* split (never val), with Mask^X's mask logits taken
apart into their two terms, the weight transfer's class-specific logits and the class-agnostic MLP
branch's.

    .venv/bin/python reports/mini/maskx_parts.py runs/mini/table1 --images 300 --out reports/mini/maskx-parts.csv

The folder holds the run folders of `run.sh`; the runs read are the baseline, Mask^X and oracle
runs of `runs.jsonl` (their `method` and `row` tags, as `tools/mini_targets.py` reads them) whose
folder is there. A diagnosis of runs already made: it changes nothing in the protocol.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
import yaml

from shapeprop.config import ExperimentConfig
from shapeprop.data import source
from shapeprop.eval.coco import resolve_categories
from shapeprop.eval.gt_boxes import gt_box_mask_table, mean_iou
from shapeprop.models.build import load_detector
from shapeprop.models.mask_branch import find_mask_branch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from mini_targets import table1_run_folders  # noqa: E402

ROWS = ("baseline", "Mask^X", "oracle")  # the Table 1 rows this diagnosis reads


# Mask^X's readings: the term each one zeroes (None: the logits as trained)
READINGS = {"whole": None, "transfer only": "mlp", "MLP only": "transfer"}


def zero_term(model: torch.nn.Module, term: str | None) -> None:
    """Zero one term of Mask^X's logits: the MLP branch's weights, or the transferred class weights."""
    if term is None:
        return
    logits = find_mask_branch(model).predictor.mask_fcn_logits
    if term == "mlp":
        logits.mlp.weight.data.zero_()
        logits.mlp.bias.data.zero_()
    else:
        shape = logits.class_weights().shape
        logits.class_weights = lambda: torch.zeros(shape)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs_dir", type=Path, help="run.sh's run folders of Table 1 (runs/mini/table1)")
    parser.add_argument(
        "--archive", type=Path, default=Path("reports/mini/runs.jsonl"), help="the runs' archive"
    )
    parser.add_argument("--images", type=int, default=300, help="test images (the first N)")
    parser.add_argument("--out", type=Path, required=True, help="CSV: one line per run and reading")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines, cache = [], {}
    for _, folder, direction, row in table1_run_folders(args.archive, args.runs_dir):
        if row not in ROWS:
            continue
        cfg = ExperimentConfig(**yaml.safe_load((folder / "config.yaml").read_text()))
        if direction not in cache:
            test = source.load_data(cfg.data, "test")
            unseen = resolve_categories(
                cfg.eval.categories, test.metadata.classes, test.metadata.class_groups
            )
            seen = [i for i in range(len(test.metadata.classes)) if i not in unseen]
            cache[direction] = (len(test.metadata.classes), unseen, seen, test.records[: args.images])
        num_classes, unseen, seen, records = cache[direction]
        readings = READINGS if row == "Mask^X" else {"whole": None}
        for reading, term in readings.items():
            model, _ = load_detector(cfg, num_classes, folder / "checkpoints" / "last.ckpt")
            zero_term(model, term)
            table = gt_box_mask_table(model, records, cfg.data.min_size, cfg.data.max_size)
            lines.append(
                {
                    "direction": direction,
                    "row": row,
                    "seed": cfg.seed,
                    "reading": reading,
                    "iou_unseen": mean_iou(table, unseen),
                    "iou_seen": mean_iou(table, seen),
                    "run": folder.name,
                }
            )
            print(lines[-1], flush=True)
    frame = pd.DataFrame(lines)
    frame.to_csv(args.out, index=False, float_format="%.2f")
    summary = frame.groupby(["direction", "row", "reading"])[["iou_unseen", "iou_seen"]].agg(
        ["mean", "std", "count"]
    )
    print(summary.round(1).to_string())


if __name__ == "__main__":
    main()
