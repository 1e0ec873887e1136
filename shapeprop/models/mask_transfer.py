"""Mask^X R-CNN (Hu et al., "Learning to Segment Every Thing"): class-specific mask weights
predicted from the box head's weights by a learned weight-transfer function.

For class c, the detection weights (classification row + the 4 box-regression rows of c) go
through a 2-layer MLP (hidden width 5x the box-head width, LeakyReLU, as in the paper) that outputs
the 1x1 mask-logit conv weights and bias of c. The detection weights enter with stop-gradient
(the paper's default), so the mask loss trains the transfer function, not the box head; classes
without masks get mask weights from their box weights alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from shapeprop.models.mask_branch import find_mask_branch


class TransferredMaskLogits(nn.Module):
    """Replaces the mask predictor's 1x1 conv: logits[n, c] = <w_c, x[n]> + b_c, (w_c, b_c) = T(box weights of c)."""

    def __init__(self, box_predictor: FastRCNNPredictor, in_channels: int):
        super().__init__()
        # not a submodule: the box predictor belongs to the box head (no double registration)
        object.__setattr__(self, "box_predictor", box_predictor)
        rep = box_predictor.cls_score.in_features
        hidden = 5 * rep
        self.transfer = nn.Sequential(
            nn.Linear(5 * rep, hidden), nn.LeakyReLU(0.1), nn.Linear(hidden, in_channels + 1)
        )
        self.in_channels = in_channels

    def class_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask conv weights [K, C] and biases [K] for the K foreground classes."""
        cls_w = self.box_predictor.cls_score.weight[1:]  # drop background
        box_w = self.box_predictor.bbox_pred.weight[4:].reshape(cls_w.shape[0], 4 * cls_w.shape[1])
        det = torch.cat([cls_w, box_w], dim=1).detach()
        out = self.transfer(det)
        return out[:, : self.in_channels], out[:, self.in_channels]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.class_weights()
        return F.conv2d(x, weight[:, :, None, None], bias)


def enable_mask_transfer(model: nn.Module) -> None:
    """Turn a class-specific Mask R-CNN into Mask^X R-CNN (in place)."""
    branch = find_mask_branch(model)
    if branch.class_agnostic:
        raise ValueError(
            "model.mask_transfer (Mask^X R-CNN) needs class-specific masks (class_agnostic_masks false)"
        )
    old = branch.predictor.mask_fcn_logits
    branch.predictor.mask_fcn_logits = TransferredMaskLogits(model.roi_heads.box_predictor, old.in_channels)
