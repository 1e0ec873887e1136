#!/usr/bin/env bash
# The registered val runs (PROTOCOL.md section 5) across sessions and fresh checkouts, from main:
#
#     bash reports/mini/val.sh start     # worktree at the registered commit, run.sh in the background
#     bash reports/mini/val.sh collect   # what has finished, into this checkout's reports/mini/ (commit it)
#
# `start` installs this checkout's .venv if it lacks one, checks the registered commit out in $WT
# (../wt-val) unless it is there, hands it this checkout's archive and wall times (a fresh store
# starts from them: run.sh imports the archive, so a new machine loses only the runs in progress)
# and starts its run.sh with this checkout's .venv, detached, logging to $WT/run.out; it refuses
# while a run.sh of $WT is running. `collect` exports the worktree's store to runs.jsonl, copies its
# wall times and renews targets.md. Rendering the tables that finished stays by hand
# (reports/mini/README.md says which).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
MAIN=$PWD
REGISTERED=e8aaa02  # PROTOCOL.md's commit: the code every val run of benchmark version 3 runs
WT=$(realpath -m "${WT:-../wt-val}")
BIN=$MAIN/.venv/bin
OUT=reports/mini

running() {  # whether a run.sh runs in $WT
  local pid
  for pid in $(pgrep -f "bash reports/mini/run.sh"); do
    [ "$(readlink "/proc/$pid/cwd")" != "$WT" ] || return 0
  done
  return 1
}

case "${1:-}" in
  start)
    if running; then echo "val.sh: run.sh is already running in $WT (tail -f $WT/run.out)" >&2; exit 1; fi
    [ -x "$BIN/shapeprop-bench" ] || make install
    [ -d "$WT" ] || git worktree add --detach "$WT" "$REGISTERED"
    cp "$OUT/runs.jsonl" "$OUT/wall_times.tsv" "$WT/$OUT/"
    [ ! -f "$WT/run.out" ] || mv "$WT/run.out" "$WT/run.out.$(date +%s)"
    cd "$WT"
    BIN=$BIN PYTHONPATH=$WT setsid nohup bash reports/mini/run.sh > run.out 2>&1 < /dev/null &
    echo "val.sh: run.sh started in $WT (tail -f $WT/run.out)"
    ;;
  collect)
    (cd "$WT" && MLFLOW_TRACKING_URI=sqlite:///runs/mini/mlflow.db PYTHONPATH=$WT \
      "$BIN/shapeprop-bench" archive export --profile mini --out "$MAIN/$OUT/runs.jsonl")
    cp "$WT/$OUT/wall_times.tsv" "$OUT/wall_times.tsv"
    "$BIN/python" tools/mini_targets.py --out "$OUT/targets.md"
    git status --short -- "$OUT"
    ;;
  *)
    sed -n '2,13p' "$0" | cut -c3- >&2
    exit 2
    ;;
esac
