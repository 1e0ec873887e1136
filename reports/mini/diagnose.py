"""One mini run evaluated on the synthetic *test* split, never on val (the split the reports use).

Used to choose the mini recipe without touching the reported split. Example:

    .venv/bin/python reports/mini/diagnose.py suites/table1.yaml "non-voc -> voc | Mask R-CNN (Baseline)" \
        /tmp/diag/lr03 '{"model.weights": "synthetic-pretrained", "schedule.max_steps": 400, \
        "schedule.milestones": [300, 375], "schedule.lr": 0.03, "schedule.warmup_steps": 50}'

The recipe figures in reports/mini/README.md came from this script; the JSON overrides are
applied after the suite's mini profile. THREADS sets torch's threads (default 1).
"""

import json
import os
import sys
import time
from pathlib import Path

import torch

from harness.plan import select
from harness.suite import expand, load_suite
from shapeprop.config import ExperimentConfig
from shapeprop.experiment import run_experiment


def main() -> None:
    suite, only, workdir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    overrides = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    spec = select(expand(load_suite(suite), "mini"), only)[0]
    cfg = spec.config.model_dump(mode="json")
    cfg["data"]["test_split"] = "test"
    for dotted, value in overrides.items():
        node = cfg
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    start = time.time()
    metrics = run_experiment(ExperimentConfig(**cfg), workdir, progress=False).metrics
    shown = {k: round(metrics[k], 2) for k in ("segm_AP", "bbox_AP", "gtbox_mask_iou", "train_s_per_step")}
    print(spec.row, f"{time.time() - start:.0f} s", shown, flush=True)


if __name__ == "__main__":
    main()
