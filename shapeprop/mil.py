"""Multiple-instance learning of the saliency (Sec. 3.1): bags from boxes (Eq. 2) and the MIL loss (Eq. 3).

Each RoI is a bag of pixels. A RoI whose IoU with a ground-truth box of class c exceeds t is a
positive bag of c; every other RoI is a negative bag (background). In the library's convention
(`shapeprop.models.labels`) the ground truth comes as 0-based class indices c and the bag labels
are labels: 0 = negative bag (background), c + 1 = positive bag of class c.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou


def assign_bags(
    rois: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    iou_threshold: float = 0.5,
    excluded: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label RoIs as positive or negative bags by IoU with the ground-truth boxes (Eq. 2).

    Args:
        rois: `[R, 4]` boxes, xyxy.
        gt_boxes: `[G, 4]` ground-truth boxes, xyxy, in the same frame; G may be 0.
        gt_labels: `[G]` long, 0-based class of each ground-truth box.
        iou_threshold: t; a RoI is positive when its IoU with a ground-truth box is strictly above it.
        excluded: optional `[R, G]` bool, pairs never matched (`assign_bags_batched`: other images).

    Returns:
        bag_labels: `[R]` long, 0 for a negative bag and c + 1 for a positive bag of class c.
        matched_gt: `[R]` long, index of the matched ground-truth box, -1 for negative bags.

    A RoI that overlaps several ground-truth boxes above t takes the one of highest IoU (Eq. 2
    would make it positive for each of their classes; one label keeps the bag labelling a
    partition, as the mask targets need one matched box).
    """
    if rois.dim() != 2 or rois.shape[-1] != 4:
        raise ValueError(f"assign_bags: rois must be [R, 4] xyxy, got shape {tuple(rois.shape)}")
    if gt_boxes.dim() != 2 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"assign_bags: gt_boxes must be [G, 4] xyxy, got shape {tuple(gt_boxes.shape)}")
    if gt_labels.shape != gt_boxes.shape[:1]:
        raise ValueError(
            f"assign_bags: gt_labels must be [G]={gt_boxes.shape[0]}, got shape {tuple(gt_labels.shape)}"
        )
    if not 0.0 < iou_threshold < 1.0:
        raise ValueError(f"assign_bags: iou_threshold must be in (0, 1), got {iou_threshold}")
    num_rois = rois.shape[0]
    bag_labels = torch.zeros(num_rois, dtype=torch.long, device=rois.device)
    matched_gt = torch.full((num_rois,), -1, dtype=torch.long, device=rois.device)
    if num_rois == 0 or gt_boxes.shape[0] == 0:
        return bag_labels, matched_gt
    iou = box_iou(rois.float(), gt_boxes.float().to(rois.device))
    if excluded is not None:
        iou = iou.masked_fill(excluded, -1.0)
    best_iou, best = iou.max(dim=1)
    positive = best_iou > iou_threshold
    labels = gt_labels.to(rois.device).long()
    bag_labels = torch.where(positive, labels[best] + 1, bag_labels)
    matched_gt = torch.where(positive, best, matched_gt)
    return bag_labels, matched_gt


def assign_bags_batched(
    rois: Sequence[torch.Tensor],
    gt_boxes: Sequence[torch.Tensor],
    gt_labels: Sequence[torch.Tensor],
    iou_threshold: float = 0.5,
) -> torch.Tensor:
    """`assign_bags` for a batch of images in one pass: the bag labels of every image's RoIs,
    concatenated. Each RoI is matched against the ground truth of its own image only; the result
    equals concatenating `assign_bags` per image, without a kernel chain per image."""
    if not len(rois) == len(gt_boxes) == len(gt_labels):
        raise ValueError(
            f"assign_bags_batched: {len(rois)} images of RoIs, {len(gt_boxes)} of boxes, {len(gt_labels)} of labels"
        )
    if not rois:
        return torch.zeros(0, dtype=torch.long)
    device = rois[0].device

    def image_of(parts: Sequence[torch.Tensor]) -> torch.Tensor:  # filled on the device: no copy, no sync
        return torch.cat([torch.full((len(p),), i, device=device) for i, p in enumerate(parts)])

    cross = image_of(rois)[:, None] != image_of(gt_boxes)[None, :]
    return assign_bags(
        torch.cat(list(rois)), torch.cat(list(gt_boxes)), torch.cat(list(gt_labels)), iou_threshold, cross
    )[0]


def mil_loss(saliency_logits: torch.Tensor, bag_labels: torch.Tensor, form: str = "sigmoid") -> torch.Tensor:
    """The MIL loss (Eq. 3) on the Avg2D-pooled saliency maps, averaged over RoIs.

    Args:
        saliency_logits: `[R, K, S, S]` per-class saliency logits of each RoI ("sigmoid"), or
            `[R, K + 1, S, S]` with the background map first ("softmax").
        bag_labels: `[R]` long, 0 = negative bag, c + 1 = positive bag of class c.
        form: "softmax": cross-entropy of the pooled logits over background + K classes (the
            authors' code). "sigmoid": a binary cross-entropy per class, summed over classes (as
            Eq. 3 sums), with target 1 on positive bags of c and 0 on every other bag, the negative
            bags N^c of Eq. 2; Eq. 3 rewards the pooled saliency linearly and is unbounded, this is
            its bounded counterpart.

    R = 0 gives 0 with a gradient.
    """
    if saliency_logits.dim() != 4:
        raise ValueError(
            f"mil_loss: saliency_logits must be [R, K, S, S], got {tuple(saliency_logits.shape)}"
        )
    if form not in ("softmax", "sigmoid"):
        raise ValueError(f"mil_loss: form must be 'softmax' or 'sigmoid', got {form!r}")
    num_rois, num_maps = saliency_logits.shape[:2]
    if bag_labels.shape != (num_rois,):
        raise ValueError(f"mil_loss: bag_labels must be [R]={num_rois}, got shape {tuple(bag_labels.shape)}")
    if num_rois == 0:
        return saliency_logits.sum() * 0.0
    pooled = saliency_logits.mean(dim=(2, 3))  # sigma = Avg2D
    if form == "softmax":
        return F.cross_entropy(pooled, bag_labels.long())
    classes = torch.arange(1, num_maps + 1, device=bag_labels.device)
    targets = (bag_labels.long()[:, None] == classes).to(pooled.dtype)  # one-hot without background
    return F.binary_cross_entropy_with_logits(pooled, targets, reduction="sum") / num_rois
