#!/usr/bin/env bash
# Issue 41: Table 1's miniature on benchmark version 3, on the synthetic TEST split (never val), with
# the shared recipe (suites/profiles/mini.yaml): every row at seed 0, then ShapeProp and the oracle
# at seeds 1 and 2 in both directions (is ShapeProp stable across seeds?). What it shows chose the
# protocol (reports/mini/PROTOCOL.md) before any val run. From the repository root:
#
#     bash reports/mini/v3/design.sh
#
# Runs go to runs/v3-design/ (its own MLflow store); finished runs are skipped and stopped ones
# resume, so the script can be run again. It ends with Table 1 and the claims in reports/mini/v3/design/.
set -euo pipefail
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-runs/v3-design}
OUT=${OUT:-reports/mini/v3/design}
mkdir -p "$RUNS" "$OUT"
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$RUNS/mlflow.db}
TEST=(--set data.test_split=test)

keys() {  # keys SEEDS ROW_PATTERN: the run keys of the matching Table 1 runs on the test split
  "$BIN/python" - "$@" <<'PY'
import fnmatch, sys
from harness.suite import expand, load_suite, parse_overrides
seeds, pattern = {int(s) for s in sys.argv[1].split(",")}, sys.argv[2]
specs = expand(load_suite("suites/table1.yaml"), "mini", parse_overrides(["data.test_split=test"]))
print(" ".join(s.key for s in specs if s.seed in seeds and fnmatch.fnmatchcase(s.row, pattern)))
PY
}

step() {  # step KEYS...: one `run` call over those runs, timed
  local start only=()
  start=$(date +%s)
  for key in "$@"; do only+=(--only "$key"); done
  "$BIN/shapeprop-bench" run suites/table1.yaml --profile mini --executor local --workers 2 \
    --runs-dir "$RUNS" "${TEST[@]}" "${only[@]}" 2>&1 | tee -a "$RUNS/design.log" || true
  echo "$* : $(( $(date +%s) - start )) s ($(date -u +%FT%TZ))" >> "$OUT/wall_times.txt"
}

"$BIN/python" -m shapeprop.models.pretrain
step $(keys 0 "*non-voc -> voc*")
step $(keys 1,2 "*non-voc -> voc | *ShapeProp*") $(keys 1,2 "*non-voc -> voc | *Oracle*")
step $(keys 0 "*voc -> non-voc*")
step $(keys 1,2 "*voc -> non-voc | *ShapeProp*") $(keys 1,2 "*voc -> non-voc | *Oracle*")
"$BIN/shapeprop-bench" report --table 1 --profile mini --suite table1 --out "$OUT" --no-log "${TEST[@]}"
"$BIN/shapeprop-bench" report --claims --profile mini --suite table1 --out "$OUT" --no-log "${TEST[@]}"

# The knobs of README.md ("Why ShapeProp falls below the baseline here"), each one run of the same
# store, selected by its key (`keys` above with the same --set; the key changes with the override):
#   shapeprop-bench run suites/table1.yaml --profile mini --executor local --workers 2 --runs-dir runs/v3-design \
#     --set data.test_split=test --set model.shapeprop_rois_per_image=64 --only <key of seed 0's ShapeProp row>
#   ... --set 'schedule.precision="32"' --only <key>
#   ... --set model.shapeprop_rois_per_image=64 --only <keys of seeds 1, 2 of the baseline and ShapeProp rows>
# (--workers 2 even for one run: the local executor gives each worker cores / workers threads, and
# two single-worker calls at once would each take both cores and slow each other ~30x.)
