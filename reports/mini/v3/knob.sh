# Sourced by the design scripts of issue 41: `knob ROW_PATTERN [--set KEY=VALUE]...` runs seed 0 of the
# Table 1 rows matching the pattern, on the test split, with those overrides (their run keys change
# with them), into $RUNS (default runs/v3-design-c), appending to $RUNS/design.log.
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-runs/v3-design-c}
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$RUNS/mlflow.db}

knob() {
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
