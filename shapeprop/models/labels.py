"""The library's label convention, and the one place for each conversion at a boundary.

A class has two forms:

- a **class index** `c` is 0-based over the K foreground classes. The ShapeProp head takes these
  (`ShapePropHead.forward(classes=...)`, one saliency map per class), `shapeprop.mil.assign_bags`
  takes them for the ground truth, and detectron2 uses them (`gt_classes`, `pred_classes`).
- a **label** can also say "background": `0` = background, `c + 1` = class `c`. The library speaks
  labels at its interfaces: the loader targets and detection dicts (torchvision's convention, the
  datasets' 1-based category ids), the mask branch's RoI labels (`shapeprop.models.mask_branch`),
  and the MIL bag labels (`shapeprop.mil`: 0 = negative bag, `c + 1` = positive bag of class `c`,
  which with the softmax MIL loss is also the index of its saliency map, background first).

Conversions, each at one boundary:

- `label_to_class` / `class_to_label`: foreground labels <-> class indices (the ShapeProp head and
  the MIL ground truth inside the mask branch; detectron2's `Instances` in `shapeprop.models.d2`).
- `head_classes`: RoI labels -> the head's class indices, background RoIs as class 0 (the head
  needs some class for them; only their saliency maps, through the MIL loss, are used).
- `from_d2_roi_classes`: detectron2's RoI `gt_classes`, where `num_classes` (K) is background.
"""

from __future__ import annotations

import torch

BACKGROUND = 0  # the label of background (torchvision's box predictor: row 0)


def label_to_class(labels: torch.Tensor) -> torch.Tensor:
    """Foreground labels (>= 1) -> 0-based class indices."""
    return labels - 1


def class_to_label(classes: torch.Tensor) -> torch.Tensor:
    """0-based class indices -> labels (>= 1)."""
    return classes + 1


def head_classes(labels: torch.Tensor) -> torch.Tensor:
    """RoI labels (0 = background) -> class indices for the ShapeProp head, background as class 0."""
    return labels.clamp(min=1) - 1


def from_d2_roi_classes(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """detectron2's RoI `gt_classes` (0-based; `num_classes` = background) -> labels."""
    return torch.where((classes >= 0) & (classes < num_classes), classes + 1, BACKGROUND)
