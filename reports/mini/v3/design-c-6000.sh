#!/usr/bin/env bash
# Issue 41, design C, test split: every Table 1 row at 6000 steps (LR x0.1 at 4000 and 5333), seed 0,
# after design-c-knobs.sh measured the baseline and ShapeProp in voc -> non-voc there (box AP 38-39
# instead of 25-30 at 3000 steps). From the repository root:
#
#     RUNS=runs/v3-design-c bash reports/mini/v3/design-c-6000.sh
set -euo pipefail
# shellcheck source=reports/mini/v3/knob.sh
source "$(dirname "$0")/knob.sh"
SIX=(--set schedule.max_steps=6000 --set "schedule.milestones=[4000, 5333]")
# first the baseline and ShapeProp ("Mask R-CNN (Baseline)", "Mask R-CNN w/ ShapeProp") of non-voc -> voc
knob "*non-voc -> voc | Mask R-CNN [(w]*" "${SIX[@]}"
# then the other rows, both directions at once (design-c-knobs.sh ran the baseline and ShapeProp of
# voc -> non-voc; its baseline run has a key of scheme 2, the same config and code)
knob "*Mask^X*" "${SIX[@]}"
knob "*trained w/*" "${SIX[@]}"  # GrabCut and the box-mask floor
knob "*Oracle*" "${SIX[@]}"
