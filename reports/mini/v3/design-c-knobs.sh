#!/usr/bin/env bash
# Issue 41, design C, test split: why ShapeProp gains less in voc -> non-voc (22 % of the mask AP gap at
# seed 0) than in non-voc -> voc (51 %). One knob at a time, seed 0, into design.sh's store; each run is
# the suite's row with one --set (its run key changes with it). From the repository root:
#
#     RUNS=runs/v3-design-c bash reports/mini/v3/design-c-knobs.sh
set -euo pipefail
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-runs/v3-design-c}
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$RUNS/mlflow.db}

knob() {  # knob ROW_PATTERN --set KEY=VALUE...: seed 0 of the matching Table 1 rows with those overrides
  local pattern=$1
  shift
  local sets=(--set data.test_split=test "$@") only
  only=$("$BIN/python" - "$pattern" "${sets[@]}" <<'PY'
import fnmatch, sys
from harness.suite import expand, load_suite, parse_overrides
pattern, sets = sys.argv[1], [a for a in sys.argv[2:] if a != "--set"]
specs = expand(load_suite("suites/table1.yaml"), "mini", parse_overrides(sets))
print(" ".join(f"--only {s.key}" for s in specs if s.seed == 0 and fnmatch.fnmatchcase(s.row, pattern)))
PY
)
  # shellcheck disable=SC2086
  "$BIN/shapeprop-bench" run suites/table1.yaml --profile mini --executor local --workers 2 --runs-dir "$RUNS" \
    "${sets[@]}" $only 2>&1 | tee -a "$RUNS/design.log" || true
}

# the ShapeProp head twice as wide (hidden 32 instead of 16), both directions
knob "*w/ ShapeProp (Ours)" --set model.shapeprop.hidden_channels=32
# twice the schedule (6000 steps, LR decay at 2/3 and 8/9), baseline and ShapeProp, voc -> non-voc
knob "*voc -> non-voc | Mask R-CNN (Baseline)" --set schedule.max_steps=6000 --set "schedule.milestones=[4000, 5333]"
knob "*voc -> non-voc | *ShapeProp*" --set schedule.max_steps=6000 --set "schedule.milestones=[4000, 5333]"
