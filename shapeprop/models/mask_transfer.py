"""Mask^X R-CNN (Hu et al., "Learning to Segment Every Thing"): class-specific mask weights
predicted from the box head's weights by a learned weight-transfer function, fused with a
class-agnostic MLP mask branch ("transfer+MLP", the variant behind the Mask^X numbers of the
ShapeProp paper's Table 1: 28.9 / 23.7 mask AP with R-50-FPN).

As the authors' configuration of that variant (`e2e_clsbox_2_layer_mlp_nograd`):
- the transfer function takes class c's detection weights (classification row + the 4 box-regression
  rows of c), with stop-gradient, through a 2-layer MLP (hidden width = the mask head's width,
  LeakyReLU 0.1) to the weights of c's 1x1 mask-logit conv, without a bias; classes without masks
  get mask weights from their box weights alone;
- the MLP branch is one fully connected layer from an RoI's whole mask-head feature map to its
  S x S mask logits (initialised N(0, 0.001)), the same for every class, added to each class's
  logits: a class-agnostic shape prior with the whole RoI in view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from shapeprop.models.mask_branch import find_mask_branch


class TransferredMaskLogits(nn.Module):
    """Replaces the mask predictor's 1x1 conv: logits[n, c] = <T(box weights of c), x[n]> + MLP(x[n])."""

    def __init__(self, box_predictor: FastRCNNPredictor, in_channels: int, resolution: int):
        super().__init__()
        # not a submodule: the box predictor belongs to the box head (no double registration)
        object.__setattr__(self, "box_predictor", box_predictor)
        rep = box_predictor.cls_score.in_features
        self.transfer = nn.Sequential(
            nn.Linear(5 * rep, in_channels),
            nn.LeakyReLU(0.1),
            nn.Linear(in_channels, in_channels, bias=False),
        )
        self.mlp = nn.Linear(in_channels * resolution**2, resolution**2)
        for layer in (self.transfer[0], self.transfer[2]):
            nn.init.kaiming_normal_(layer.weight)
        nn.init.zeros_(self.transfer[0].bias)
        nn.init.normal_(self.mlp.weight, std=0.001)
        nn.init.zeros_(self.mlp.bias)
        self.resolution = resolution

    def class_weights(self) -> torch.Tensor:
        """Mask conv weights [K, C] for the K foreground classes."""
        cls_w = self.box_predictor.cls_score.weight[1:]  # drop background
        box_w = self.box_predictor.bbox_pred.weight[4:].reshape(cls_w.shape[0], 4 * cls_w.shape[1])
        return self.transfer(torch.cat([cls_w, box_w], dim=1).detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fcn = F.conv2d(x, self.class_weights()[:, :, None, None])
        mlp = self.mlp(x.flatten(1)).view(-1, 1, self.resolution, self.resolution)
        return fcn + mlp


def enable_mask_transfer(model: nn.Module) -> None:
    """Turn a class-specific Mask R-CNN into Mask^X R-CNN (in place)."""
    branch = find_mask_branch(model)
    if branch.class_agnostic:
        raise ValueError(
            "model.mask_transfer (Mask^X R-CNN) needs class-specific masks (class_agnostic_masks false)"
        )
    old = branch.predictor.mask_fcn_logits
    # the predictor's deconv doubles the pooled RoI: its logits are 2 x the pool's size
    branch.predictor.mask_fcn_logits = TransferredMaskLogits(
        model.roi_heads.box_predictor, old.in_channels, 2 * branch.resolution
    )
