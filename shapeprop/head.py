"""The ShapeProp head (Sec. 3.1-3.2): saliency from boxes, learned propagation, shape prior for the mask head.

    RoI features ──F──> per-class saliency logits ──(map of the RoI's class)──> saliency M
    M ──encoder (1 -> C)──> latent ──propagate(weights from the RoI features)──> decoder (C -> 1)
      ──> shape logits ──normalise, prior encoder──> prior (fused into the mask head)

`ShapePropHead.losses` gives the MIL loss (Eq. 3: softmax cross-entropy over the classes and
background, or a binary cross-entropy per class, on the Avg2D-pooled maps) and the reconstruction
loss (binary cross-entropy of the shape logits against the mask target, only on positive RoIs
whose matched ground truth has a mask). `ShapePropConfig.preset` picks the authors' head
("official") or a light one; docs/fidelity.md lists every choice.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from shapeprop.config import ShapePropConfig
from shapeprop.mil import mil_loss
from shapeprop.ops import propagate

WINDOW = 3  # r of Eq. 4; the operator is built for 3x3 windows
SALIENCY_PRIOR = 0.01  # initial sigmoid of the saliency logits (most classes are absent from a RoI)


class ShapePropOutput(NamedTuple):
    """What the head computes for R RoIs of size S x S and K classes."""

    saliency_logits: torch.Tensor  # [R, K, S, S], or [R, K + 1, S, S] with background first (softmax MIL)
    saliency: torch.Tensor  # [R, 1, S, S], sigmoid of the map of each RoI's class
    shape_logits: torch.Tensor  # [R, 1, S, S]
    shape_activation: torch.Tensor  # [R, 1, S, S], sigmoid of shape_logits
    prior: torch.Tensor  # [R, prior_channels, S, S], to concatenate with the mask-head input


def conv_relu_stack(
    in_channels: int, out_channels: int, layers: int, kernel: int = 3, last_relu: bool = True
) -> nn.Sequential:
    """`layers` convs (`kernel` x `kernel`, same padding) with a ReLU after each, or between them only
    when not `last_relu`; the first maps in_channels to out_channels (identity when 0 layers)."""
    blocks: list[nn.Module] = []
    for i in range(layers):
        blocks.append(
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, kernel, padding=kernel // 2)
        )
        if last_relu or i < layers - 1:
            blocks.append(nn.ReLU())
    return nn.Sequential(*blocks)


def normalise_activation(activation: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Min-max normalise each RoI's map to [0, 1], so the prior carries the shape, not the confidence."""
    flat = activation.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1, 1)
    high = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return (activation - low) / (high - low + eps)


def relu_max_normalise(logits: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """ReLU, then divide each RoI's map by its maximum (+ eps): the authors' shape prior."""
    positive = logits.clamp_min(0)
    return positive / (positive.flatten(1).max(dim=1).values.view(-1, 1, 1, 1) + eps)


class ShapePropHead(nn.Module):
    """ShapeProp on RoI features: saliency learner F, encoder, weight regressor, propagation, decoder, prior encoder.

    Args:
        in_channels: channels of the RoI features.
        num_classes: K, foreground classes (given as 0-based class indices, `shapeprop.models.labels`).
        cfg: widths, depths, propagation options and loss weights (paper defaults).

    `out_channels` (= cfg.prior_channels) is how many channels `fuse` adds to the mask-head input.
    `channels_last` computes in channels-last memory format: the same values to float rounding.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        cfg: ShapePropConfig | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        # channels-last: oneDNN's CPU convolutions skip their reorders (the saliency trunk's first
        # conv on 128 RoIs ran forward + backward 2.7x faster in float32, docs/roofline.md)
        self.channels_last = channels_last
        cfg = cfg or ShapePropConfig()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(
                f"ShapePropHead: in_channels={in_channels} and num_classes={num_classes} must be >= 1"
            )
        self.cfg = cfg
        self.num_classes = num_classes
        self.out_channels = cfg.prior_channels
        hidden = cfg.hidden_channels or in_channels
        latent = cfg.latent_channels
        weight_groups = 1 if cfg.channel_agnostic else latent
        last_relu = cfg.relu_after_last_conv
        # The softmax MIL loss needs a background map (index 0): K + 1 maps.
        self.background_map = cfg.mil_loss == "softmax"

        # F: conv-relu stack, then a 1x1 conv to one saliency map per class (+ background).
        self.saliency_learner = conv_relu_stack(in_channels, hidden, cfg.saliency_layers)
        self.saliency_logits = nn.Conv2d(
            hidden if cfg.saliency_layers else in_channels, num_classes + self.background_map, 1
        )
        self.encoder = conv_relu_stack(1, latent, cfg.encoder_layers, last_relu=last_relu)
        self.weight_regressor = conv_relu_stack(in_channels, hidden, cfg.weight_layers)
        self.weight_logits = nn.Conv2d(hidden, weight_groups * WINDOW**2, 1)
        k = cfg.decoder_kernel
        self.decoder = nn.Sequential(
            *conv_relu_stack(latent, latent, cfg.decoder_layers - 1, kernel=k),
            nn.Conv2d(latent, 1, k, padding=k // 2),
        )
        self.prior_encoder = conv_relu_stack(1, cfg.prior_channels, cfg.prior_layers, last_relu=last_relu)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        if self.cfg.output_init == "authors":  # maskrcnn-benchmark's make_conv1x1
            for layer in (self.saliency_logits, self.weight_logits):
                nn.init.kaiming_uniform_(layer.weight, a=1)
            return
        # Start every class map at a low saliency, so the summed per-class MIL loss starts small.
        nn.init.normal_(self.saliency_logits.weight, std=0.01)
        nn.init.constant_(self.saliency_logits.bias, -math.log((1 - SALIENCY_PRIOR) / SALIENCY_PRIOR))
        # Start from uniform propagation weights (sigmoid(0) = 0.5 everywhere).
        nn.init.normal_(self.weight_logits.weight, std=0.01)

    def forward(
        self, roi_features: torch.Tensor, classes: torch.Tensor, shape_rois: torch.Tensor | None = None
    ) -> ShapePropOutput:
        """Run the head on `roi_features` `[R, in_channels, S, S]` for RoIs of 0-based `classes` `[R]`.

        `shape_rois` (long indices) restricts the shape path (weight regressor, propagation, decoder,
        prior) to those RoIs; the saliency fields keep all R rows and the shape fields get one row per
        index. Training needs the saliency of every RoI (MIL's negative bags) but the shape output of
        the positives only, so the negatives skip the costlier half of the head.

        The head computes in its weights' dtype (float32) even under autocast: in bfloat16,
        Table 4's miniature with ShapeProp ran away by step 1200 (box AP 0) while the same model
        with the head in float32 learned as in float32 (reports/mini/README.md, "bfloat16").
        """
        device = roi_features.device.type
        amp = torch.is_autocast_enabled(device) and self.cfg.saliency_autocast
        saliency_precision = torch.autocast(device, torch.get_autocast_dtype(device), enabled=amp)
        with torch.autocast(device, enabled=False):
            dtype = self.saliency_logits.weight.dtype
            layout = torch.channels_last if self.channels_last else torch.preserve_format
            features = roi_features.to(dtype, memory_format=layout)
            return self._forward(features, classes, shape_rois, saliency_precision)

    def _forward(
        self,
        roi_features: torch.Tensor,
        classes: torch.Tensor,
        shape_rois: torch.Tensor | None,
        saliency_precision: torch.autocast | None = None,
    ) -> ShapePropOutput:
        if roi_features.dim() != 4:
            raise ValueError(
                f"ShapePropHead: roi_features must be [R, C, S, S], got {tuple(roi_features.shape)}"
            )
        if classes.shape != roi_features.shape[:1]:
            raise ValueError(
                f"ShapePropHead: classes must be [R]={roi_features.shape[0]}, got shape {tuple(classes.shape)}"
            )
        with saliency_precision or contextlib.nullcontext():  # float32 unless cfg.saliency_autocast
            saliency_logits = self.saliency_logits(self.saliency_learner(roi_features)).to(roi_features.dtype)
        channel = classes.long() + self.background_map
        index = channel.view(-1, 1, 1, 1).expand(-1, 1, *saliency_logits.shape[2:])
        class_logits = saliency_logits.gather(1, index)
        saliency = class_logits.sigmoid()
        encoder_input = saliency if self.cfg.saliency_input == "sigmoid" else class_logits
        shape_features = roi_features
        if shape_rois is not None:
            shape_features, encoder_input = roi_features[shape_rois], encoder_input[shape_rois]
        weights = self.weight_logits(self.weight_regressor(shape_features)).sigmoid()
        latent = propagate(self.encoder(encoder_input), weights, self.cfg.steps, self.cfg.norm)
        shape_logits = self.decoder(latent)
        shape_activation = shape_logits.sigmoid()
        if self.cfg.prior_norm == "minmax":
            prior_input = normalise_activation(shape_activation)
        else:
            prior_input = relu_max_normalise(shape_logits)
        prior = self.prior_encoder(prior_input)
        return ShapePropOutput(saliency_logits, saliency, shape_logits, shape_activation, prior)

    @staticmethod
    def fuse(mask_features: torch.Tensor, out: ShapePropOutput) -> torch.Tensor:
        """The mask-head input with the encoded shape prior appended: `[R, C + out_channels, S, S]`."""
        return torch.cat([mask_features, out.prior.to(mask_features.dtype)], dim=1)

    def losses(
        self,
        out: ShapePropOutput,
        bag_labels: torch.Tensor,
        mask_targets: torch.Tensor,
        has_mask: torch.Tensor,
        shape_rois: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The weighted MIL loss and reconstruction loss.

        Args:
            out: the head's output for R RoIs (P shape rows when `forward` got `shape_rois`, else R).
            bag_labels: `[R]` long from `assign_bags`: 0 = negative bag, c + 1 = positive bag of class c.
            mask_targets: `[P, S, S]` float in [0, 1], the matched ground-truth mask cropped to each
                RoI of the shape rows (any value where there is none).
            has_mask: `[P]` bool, whether the matched ground truth of a shape row's RoI has a mask.
            shape_rois: the indices given to `forward`, if any.

        `loss_shape` is the per-pixel binary cross-entropy of `out.shape_logits`, averaged over the
        positive RoIs with a mask; exactly 0 (with a gradient) when there is none.
        """
        num_rois = out.shape_logits.shape[0]
        size = tuple(out.shape_logits.shape[2:])
        shape_bags = bag_labels if shape_rois is None else bag_labels[shape_rois]
        if mask_targets.shape != (num_rois, *size):
            raise ValueError(
                f"ShapePropHead.losses: mask_targets must be [R, S, S]={[num_rois, *size]}, "
                f"got shape {tuple(mask_targets.shape)}"
            )
        if has_mask.shape != (num_rois,) or shape_bags.shape != (num_rois,):
            raise ValueError(
                f"ShapePropHead.losses: has_mask {tuple(has_mask.shape)} and bag_labels "
                f"{tuple(bag_labels.shape)} must be [R]={num_rois} (or [P] for the shape rows)"
            )
        if bag_labels.shape != out.saliency_logits.shape[:1]:
            raise ValueError(
                f"ShapePropHead.losses: bag_labels {tuple(bag_labels.shape)} must have one entry per "
                f"RoI of the saliency maps ({out.saliency_logits.shape[0]})"
            )
        selected = has_mask.bool() & (shape_bags > 0)
        # Masking instead of indexing: no host sync, 0 with a gradient when nothing is selected,
        # and whatever fills the targets of unselected RoIs (even NaN) cannot leak in.
        targets = torch.where(selected.view(-1, 1, 1), mask_targets.to(out.shape_logits.dtype), 0.0)
        per_pixel = F.binary_cross_entropy_with_logits(out.shape_logits[:, 0], targets, reduction="none")
        per_roi = torch.where(selected, per_pixel.flatten(1).mean(dim=1), 0.0)
        loss_shape = per_roi.sum() / selected.sum().clamp_min(1)
        return {
            "loss_mil": self.cfg.mil_loss_weight
            * mil_loss(out.saliency_logits, bag_labels, self.cfg.mil_loss),
            "loss_shape": self.cfg.reconstruction_loss_weight * loss_shape,
        }
