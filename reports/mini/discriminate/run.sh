#!/usr/bin/env bash
# Can the synthetic benchmark tell the methods apart on classes without masks (issue 21, item 3)?
# Table 1's miniature, non-voc -> voc, seed 0, on the synthetic *test* split, generator version 1
# against version 2 (data.options.version): GrabCut, the class-agnostic baseline, ShapeProp and the
# oracle. From the repository root, after `make install`:
#
#     bash reports/mini/discriminate/run.sh
#
# Runs go to runs/discriminate/ (MLflow store runs/discriminate/mlflow.db); finished runs are
# skipped and stopped ones resume from their checkpoints, so the script can be run again. It ends
# with Table 1 of each version in reports/mini/discriminate/v<version>/.
set -euo pipefail
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-runs/discriminate}
OUT=reports/mini/discriminate
mkdir -p "$RUNS"
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$RUNS/mlflow.db}
# The seed-0 runs of the rows GrabCut, Baseline, ShapeProp and Oracle (non-voc -> voc), by run key
# (`run ... --dry-run` lists them): `--only` filters are alternatives, so a row and a seed cannot be
# asked for together.
declare -A KEYS=(
  [1]="a06dfb13a9317839 2a4c81e72420b963 7f36283ecb632356 9328494ae4631736"
  [2]="767bdfa50dc5bd7e 2150882493b3c524 a37478707d9e809c f793db79d7bc402f"
)
"$BIN/python" -m shapeprop.models.pretrain  # the tiny backbone's ImageNet stand-in, trained once and cached
for version in 1 2; do
  start=$(date +%s)
  only=()
  for key in ${KEYS[$version]}; do only+=(--only "$key"); done
  "$BIN/shapeprop-bench" run suites/table1.yaml --profile mini --executor local --workers 2 --runs-dir "$RUNS" \
    --set data.test_split=test --set data.options.version=$version "${only[@]}" 2>&1 | tee "$RUNS/v$version.log" || true
  summary=$(grep -E '^done [0-9]+, skipped' "$RUNS/v$version.log" | tail -1 || true)
  echo "version $version: $(( $(date +%s) - start )) s ($summary; $(date -u +%FT%TZ))" >> "$OUT/wall_times.txt"
done
for version in 1 2; do
  "$BIN/shapeprop-bench" report --table 1 --profile mini --out "$OUT/v$version" --no-log \
    --set data.test_split=test --set data.options.version=$version
done
