#!/usr/bin/env bash
# The paper's claims in miniature (issue 8): the `mini` profiles of four suites, 3 seeds each, on the
# synthetic benchmark, then the reports in this folder. From the repository root, after `make install`:
#
#     bash reports/mini/run.sh
#
# Runs go to runs-mini/ (MLflow store runs-mini/mlflow.db); a run that already FINISHED there is
# skipped, so the script can be started again after an interruption. Each suite's wall time is
# appended to reports/mini/wall_times.tsv.
set -euo pipefail
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-runs-mini}
OUT=reports/mini
mkdir -p "$RUNS"
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$RUNS/mlflow.db}
WORKERS=${WORKERS:-2}

"$BIN/python" -m shapeprop.models.pretrain  # the tiny backbone's ImageNet stand-in, trained once and cached

for suite in ${SUITES:-best_overlap table1 ablations fractions}; do
  start=$(date +%s)
  status=ok
  "$BIN/shapeprop-bench" run "suites/$suite.yaml" --profile mini --executor local --workers "$WORKERS" \
    --runs-dir "$RUNS" || status=failed
  printf '%s\t%s\t%s\t%s\t%s\n' "$suite" "$(( $(date +%s) - start ))" "$status" "$(nproc) cores, $WORKERS workers" \
    "$(date -u +%FT%TZ)" >> "$OUT/wall_times.tsv"
done

"$BIN/shapeprop-bench" report --table 1 --table 4 --figure 6 --figure 9 --profile mini --out "$OUT" --no-log
