#!/usr/bin/env bash
# The paper's claims in miniature (issue 8): the `mini` profiles of table1, ablations, fractions and
# best_overlap, 3 seeds each, on the synthetic benchmark, then the reports in this folder. From the
# repository root, after `make install`:
#
#     bash reports/mini/run.sh
#
# Runs go to runs-mini/ (MLflow store runs-mini/mlflow.db). A run that already FINISHED there is
# skipped, so the script can be stopped and started again; the claims' rows run first, the context
# rows (oracle, GrabCut, Mask^X, more head params, channel-agnostic) last. The wall time of every
# `run` call is appended to reports/mini/wall_times.tsv.
set -euo pipefail
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-runs-mini}
OUT=reports/mini
WORKERS=${WORKERS:-2}
mkdir -p "$RUNS"
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$RUNS/mlflow.db}

step() {  # step SUITE [--only FILTER]...: one `run` call, timed
  local suite=$1 start status=ok
  shift
  start=$(date +%s)
  "$BIN/shapeprop-bench" run "suites/$suite.yaml" --profile mini --executor local --workers "$WORKERS" \
    --runs-dir "$RUNS" "$@" || status=failed
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$suite" "$*" "$(( $(date +%s) - start ))" "$status" \
    "$(nproc) cores, $WORKERS workers" "$(date -u +%FT%TZ)" >> "$OUT/wall_times.tsv"
}

"$BIN/python" -m shapeprop.models.pretrain  # the tiny backbone's ImageNet stand-in, trained once and cached

step best_overlap
step table1 --only "*Mask R-CNN (Baseline)" --only "*w/ ShapeProp (Ours)"
step ablations --only "baselin[e]" --only "baseline + ShapePro[p]" --only "baseline + More boxes*"
step fractions
step table1 --only "*Fully supervised (Oracle)"
step ablations
step table1

"$BIN/shapeprop-bench" report --table 1 --table 4 --figure 6 --figure 9 --profile mini --out "$OUT" --no-log
"$BIN/shapeprop-bench" report --claims --profile mini --out "$OUT" --no-log  # the suites' claims: claims.md, claims.csv
