#!/usr/bin/env bash
# Issue 41, design C, test split: Mask^X R-CNN as the authors ran it for the paper's Table 1
# (transfer+MLP, key scheme 3), seed 0, both directions, into design.sh's store. From the repository root:
#
#     RUNS=runs/v3-design-c bash reports/mini/v3/design-c-maskx.sh
set -euo pipefail
# shellcheck source=reports/mini/v3/knob.sh
source "$(dirname "$0")/knob.sh"
knob "*Mask^X R-CNN"
