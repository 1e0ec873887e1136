#!/usr/bin/env bash
# Issue 41, design C, after design.sh: the baseline at seeds 1 and 2 in both directions (to pair with
# ShapeProp's), on the test split, into design.sh's store. From the repository root:
#
#     RUNS=runs/v3-design-c bash reports/mini/v3/design-extra.sh
set -euo pipefail
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-runs/v3-design-c}
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$RUNS/mlflow.db}
only=$("$BIN/python" - <<'PY'
import fnmatch
from harness.suite import expand, load_suite, parse_overrides
specs = expand(load_suite("suites/table1.yaml"), "mini", parse_overrides(["data.test_split=test"]))
print(" ".join(f"--only {s.key}" for s in specs if s.seed in (1, 2) and fnmatch.fnmatchcase(s.row, "*Mask R-CNN (Baseline)*")))
PY
)
# shellcheck disable=SC2086
"$BIN/shapeprop-bench" run suites/table1.yaml --profile mini --executor local --workers 2 --runs-dir "$RUNS" \
  --set data.test_split=test $only 2>&1 | tee -a "$RUNS/design.log"
