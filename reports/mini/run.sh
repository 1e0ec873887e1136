#!/usr/bin/env bash
# Every table in miniature on benchmark version 3, as registered in reports/mini/PROTOCOL.md (issue
# 41): the `mini` profiles of every suite (one shared recipe, suites/profiles/mini.yaml), Table 1 at
# 5 seeds, the others at 3, then Table 4 until its claims are decided, on the synthetic val split.
# From the repository root, after `make install`:
#
#     bash reports/mini/run.sh
#
# Many hours of training on 2 cores (two runs at a time, ~6-9 min per 3000-step run (Table 1: 6000) at 160 px in
# bfloat16), so it runs in parts: a run that already FINISHED is skipped and a stopped one resumes
# from its last checkpoint (every 300 steps), so the script can be stopped and started again, and the
# reports render whatever has finished.
# Order (PROTOCOL.md): Table 1 (its claim rows, then the context rows), Table 4's cheap rows, Figs. 6
# and 9, Table 3 and Table 2, Table 4's More boxes rows (28714 steps each), then Table 4 until its
# claims are decided. Runs go to runs/mini/ (MLflow store runs/mini/mlflow.db). The wall
# time of every `run` call that had runs to do is appended to reports/mini/wall_times.tsv.
# After every call the finished runs are archived in reports/mini/runs.jsonl (commit it), and a
# fresh store starts from that archive: a lost store (a new checkout) loses only the runs in progress.
# The version-1 runs of the same archive (before 2026-12-06) no longer match any suite's keys; their
# reports are kept in reports/mini/v1/.
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

# Registered before it is run (issue 41): no val run of the benchmark before its protocol is committed.
if ! git ls-files --error-unmatch "$OUT/PROTOCOL.md" > /dev/null 2>&1 || ! git diff --quiet HEAD -- "$OUT/PROTOCOL.md"; then
  echo "reports/mini/run.sh: $OUT/PROTOCOL.md is not committed as it is: register the protocol first" \
    "(reports/mini/v3/README.md says where its design stands)" >&2
  exit 1
fi
[ ! -f "$ARCHIVE" ] || "$BIN/shapeprop-bench" archive import "$ARCHIVE"  # runs finished on another machine
"$BIN/python" -m shapeprop.models.pretrain  # the tiny backbone's ImageNet stand-in, trained once and cached

step table1 --only "*Mask R-CNN (Baseline)" --only "*w/ ShapeProp (Ours)"
step table1 --only "*Fully supervised (Oracle)" --only "*trained w/ box masks"
step table1
step ablations --only "baselin[e]" --only "baseline + ShapePro[p]"
step ablations --only "baseline + More head param[s]" --only "baseline + ShapeProp (Channel-agnostic)"
step fractions
step best_overlap
step table3
step table2
step ablations  # the More boxes rows
# Table 4's undecided claims get seeds, one per round, up to 8 (run --until-decided: alpha spending)
step ablations --until-decided --max-seeds 8 --seeds-per-round 1
"$BIN/shapeprop-bench" report --table 1 --table 2 --table 3 --table 4 --figure 6 --figure 9 --profile mini --out "$OUT" --no-log
"$BIN/shapeprop-bench" report --claims --profile mini --out "$OUT" --no-log  # the suites' claims: claims.md, claims.csv
