"""The suite of two tiny real runs that the `show` and serving tests train (its data under `{root}`)."""

from __future__ import annotations

SUITE_NAME = "show-test"
SUITE_YAML = """\
name: show-test
description: tiny real runs for the show tests
reproduces: table4
base:
  data:
    dataset: synthetic
    root: {root}
    options: {{num_images: 8, image_size: 64}}
    min_size: 64
    max_size: 64
    num_workers: 0
  model: {{backbone: tiny, shapeprop_rois_per_image: 16, shapeprop: {{preset: light}}}}
  schedule: {{max_steps: 2, batch_size: 2, checkpoint_every: 2, warmup_steps: 1, milestones: [1]}}
  eval: {{max_images: 4, timing: false}}
rows:
  - {{label: baseline, method: mask_rcnn}}
  - {{label: baseline + ShapeProp, method: shapeprop}}
"""
