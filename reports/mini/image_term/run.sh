#!/usr/bin/env bash
# How many test images the mini claims need (issue 40): Table 4's "+ ShapeProp" pair (ablations.yaml,
# rows baseline and baseline + ShapeProp, 3 seeds, the mini recipe) evaluated on 1000 images of the
# synthetic **test** split (a benchmark setting is chosen on test, never on val), then the image term
# of each claim metric at the first 100, 250, 500 and 1000 of them beside the seed term:
#
#     bash reports/mini/image_term/run.sh      # about 40 minutes on 2 cores
#
# Runs go to runs/image-term/ (a store of its own); the figures to reports/mini/image_term/.
set -euo pipefail
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-runs/image-term}
OUT=reports/mini/image_term
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$RUNS/mlflow.db}
mkdir -p "$RUNS"
"$BIN/python" -m shapeprop.models.pretrain
"$BIN/shapeprop-bench" run suites/ablations.yaml --profile mini --only "baselin[e]" --only "baseline + ShapePro[p]" \
  --executor local --workers 2 --runs-dir "$RUNS" \
  --set data.test_split=test --set eval.max_images=1000
"$BIN/python" tools/image_term.py --suite ablations --profile mini --out "$OUT/image_term.md"
