#!/usr/bin/env bash
# Every table in miniature (issue 21): the `mini` profiles of every suite, 3 seeds (5 for Table 1),
# at the converged schedules (3000 steps, reports/mini/curves/), on the synthetic benchmark, then the
# reports and the claims in this folder. From the repository root, after `make install`:
#
#     bash reports/mini/run.sh
#
# About a day of training on 2 cores (two runs at a time, 7-10 min per 3000-step run in bfloat16),
# so it runs in parts: a run that already FINISHED is skipped and a stopped one resumes from its last
# checkpoint (every 300 steps), so the script can be stopped and started again, and the reports
# render whatever has finished.
# Order: Table 1's claim rows (the paper's headline), then the other claim rows, the context rows
# (oracle, GrabCut, Mask^X), Table 4's more-head-params and channel-agnostic rows, Table 2 (4800
# steps, 6600 for RetinaMask: its own curves, decided after the store had to start again;
# reports/mini/curves/README.md), and last Table 4's More boxes rows (28714 steps each, the most
# training time for the fewest claims). Runs go to runs/mini/ (MLflow store
# runs/mini/mlflow.db). The wall time of every `run` call that had runs to do is appended to
# reports/mini/wall_times.tsv.
# After every call the finished runs are archived in reports/mini/runs.jsonl (commit it), and a
# fresh store starts from that archive: a lost store (a new checkout) loses only the runs in progress.
set -euo pipefail
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-runs/mini}  # a store of its own: the 300-step runs of runs-mini/ would fill cells not yet rerun
OUT=reports/mini
WORKERS=${WORKERS:-2}
mkdir -p "$RUNS"
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$RUNS/mlflow.db}

ARCHIVE=$OUT/runs.jsonl
archive() { "$BIN/shapeprop-bench" archive export --profile mini --out "$ARCHIVE" || true; }

STEP=()  # the `run` call in progress: suite, filters, start time
record() {  # record STATUS: a row of wall_times.tsv for the call in progress
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "${STEP[0]}" "${STEP[1]}" "$(( $(date +%s) - STEP[2] ))" "$1" \
    "$(nproc) cores, $WORKERS workers" "$(date -u +%FT%TZ)" >> "$OUT/wall_times.tsv"
}
# A call stopped by a signal (Ctrl-C, the end of a session) still gets its row; its runs resume next time.
trap '[ ${#STEP[@]} -eq 0 ] || { record "stopped by a signal"; archive; }; exit 143' TERM INT HUP

step() {  # step SUITE [--only FILTER]...: one `run` call, timed
  local suite=$1 status=ok output
  shift
  output=$(mktemp)
  STEP=("$suite" "$*" "$(date +%s)")
  "$BIN/shapeprop-bench" run "suites/$suite.yaml" --profile mini --executor local --workers "$WORKERS" \
    --runs-dir "$RUNS" "$@" 2>&1 | tee "$output" || status=failed
  if [ $status = ok ] && grep -q ", 0 to run," "$output"; then status=none; fi  # all had finished
  rm -f "$output"
  if [ $status = none ]; then STEP=(); return; fi  # no row
  record "$status"
  STEP=()
  archive
}

[ ! -f "$ARCHIVE" ] || "$BIN/shapeprop-bench" archive import "$ARCHIVE"  # runs finished on another machine
"$BIN/python" -m shapeprop.models.pretrain  # the tiny backbone's ImageNet stand-in, trained once and cached

step table1 --only "*Mask R-CNN (Baseline)" --only "*w/ ShapeProp (Ours)"
step table1 --only "*Fully supervised (Oracle)"
step ablations --only "baselin[e]" --only "baseline + ShapePro[p]"
step fractions
step best_overlap
step table3
step table1
step ablations --only "baseline + More head param[s]" --only "baseline + ShapeProp (Channel-agnostic)"
step table2 --only "*| Mask R-CNN" --only "*| Mask R-CNN w/ ShapeProp"
step table2
step ablations  # the More boxes rows
"$BIN/shapeprop-bench" report --table 1 --table 2 --table 3 --table 4 --figure 6 --figure 9 --profile mini --out "$OUT" --no-log
"$BIN/shapeprop-bench" report --claims --profile mini --out "$OUT" --no-log  # the suites' claims: claims.md, claims.csv
