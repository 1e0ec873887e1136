"""shapeprop-bench's worked example of extending it without editing the package.

Importing this module (a suite's `plugins: [shapeprop_example]`, `--plugin shapeprop_example`, or
installed: the entry point in pyproject.toml) registers
- the dataset `blobs` (its own data, written in COCO format on first use: `blobs.py`),
- the method `shapeprop_4_steps` (ShapeProp with 4 propagation steps instead of max(H, W)),
- the detector `mask_rcnn_more_positives` (Mask R-CNN whose sampled RoIs are up to half positives,
  instead of a quarter).
`suite.yaml` runs them beside the built-in rows.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from harness.methods import Method, register
from shapeprop.data import catalog
from shapeprop.models.detectors import DETECTORS
from shapeprop_example.blobs import CLASSES, load_blobs

catalog.register("blobs", load_blobs, classes=CLASSES)


def _shapeprop_4_steps(cfg: dict[str, Any]) -> dict[str, Any]:
    head = dict(cfg["model"].get("shapeprop") or {})  # keep what the suite's base chose
    return {
        "model.arch": "mask_rcnn",
        "model.shapeprop": {**head, "steps": 4},
        "model.pseudo_masks": "none",
        "model.mask_transfer": False,
    }


register(Method("shapeprop_4_steps", "Mask R-CNN w/ ShapeProp, 4 propagation steps", _shapeprop_4_steps))


# A variant detector: Mask R-CNN's own builders, one value of its recipe changed. Both frameworks
# (torchvision and detectron2) read the recipe, so the variant is the same in both.
mask_rcnn = DETECTORS.get("mask_rcnn")
DETECTORS.register(
    "mask_rcnn_more_positives",
    replace(
        mask_rcnn,
        recipe=replace(mask_rcnn.recipe, box_positive_fraction=0.5),
        description="Mask R-CNN sampling up to half positive RoIs",
    ),
)
