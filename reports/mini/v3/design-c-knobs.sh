#!/usr/bin/env bash
# Issue 41, design C, test split: why ShapeProp gains less in voc -> non-voc (22 % of the mask AP gap at
# seed 0) than in non-voc -> voc (51 %). One knob at a time, seed 0, into design.sh's store; each run is
# the suite's row with one --set (its run key changes with it). From the repository root:
#
#     RUNS=runs/v3-design-c bash reports/mini/v3/design-c-knobs.sh
set -euo pipefail
# shellcheck source=reports/mini/v3/knob.sh
source "$(dirname "$0")/knob.sh"

# the ShapeProp head twice as wide (hidden 32 instead of 16), both directions
knob "*w/ ShapeProp (Ours)" --set model.shapeprop.hidden_channels=32
# twice the schedule (6000 steps, LR decay at 2/3 and 8/9), baseline and ShapeProp, voc -> non-voc
knob "*voc -> non-voc | Mask R-CNN (Baseline)" --set schedule.max_steps=6000 --set "schedule.milestones=[4000, 5333]"
knob "*voc -> non-voc | *ShapeProp*" --set schedule.max_steps=6000 --set "schedule.milestones=[4000, 5333]"
