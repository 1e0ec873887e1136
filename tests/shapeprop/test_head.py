"""The ShapePropHead: shapes, presets, prior normalisations, masked reconstruction loss, a toy task,
autocast."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from shapeprop.config import ShapePropConfig
from shapeprop.head import ShapePropHead, ShapePropOutput
from shapeprop.mil import assign_bags, mil_loss

SMALL = ShapePropConfig(hidden_channels=8, latent_channels=4, prior_channels=5)


@pytest.mark.parametrize("preset", ["official", "light"])
@pytest.mark.parametrize("channel_agnostic", [False, True])
@pytest.mark.parametrize("num_rois", [0, 3])
def test_output_shapes(channel_agnostic, num_rois, preset):
    cfg = ShapePropConfig(
        preset=preset,
        hidden_channels=8,
        latent_channels=4,
        prior_channels=5,
        channel_agnostic=channel_agnostic,
    )
    head = ShapePropHead(in_channels=6, num_classes=4, cfg=cfg)
    feats = torch.randn(num_rois, 6, 7, 9)
    out = head(feats, torch.arange(num_rois) % 4)
    assert isinstance(out, ShapePropOutput)
    background = preset == "official"  # the softmax MIL loss has a background map, first
    assert out.saliency_logits.shape == (num_rois, 4 + background, 7, 9)
    for name in ("saliency", "shape_logits", "shape_activation"):
        assert getattr(out, name).shape == (num_rois, 1, 7, 9), name
    assert out.prior.shape == (num_rois, 5, 7, 9)
    assert head.out_channels == 5
    assert head.weight_logits.out_channels == (1 if channel_agnostic else 4) * 9
    fused = head.fuse(torch.randn(num_rois, 6, 7, 9), out)
    assert fused.shape == (num_rois, 6 + head.out_channels, 7, 9)
    if num_rois:
        torch.testing.assert_close(out.shape_activation, out.shape_logits.sigmoid())
        # The saliency is the sigmoid of the map of each RoI's own class.
        torch.testing.assert_close(
            out.saliency[:, 0], out.saliency_logits[torch.arange(3), torch.arange(3) + background].sigmoid()
        )


def test_shape_path_on_a_subset_equals_the_full_head_restricted_to_it():
    """Training runs the shape path on the positives only: same outputs, losses and gradients as the
    full head whose negatives' shape output is unused."""
    torch.manual_seed(0)
    head = ShapePropHead(in_channels=6, num_classes=4, cfg=SMALL).double()
    feats = torch.randn(7, 6, 9, 9, dtype=torch.float64)
    classes = torch.tensor([0, 3, 1, 2, 0, 0, 1])
    bags = torch.tensor([1, 4, 0, 3, 0, 0, 2])
    subset = torch.tensor([0, 1, 3, 6])  # the positive bags
    targets = torch.rand(4, 9, 9, dtype=torch.float64)
    has_mask = torch.tensor([True, False, True, True])

    def run(shape_rois):
        head.zero_grad()
        x = feats.clone().requires_grad_(True)
        out = head(x, classes, shape_rois=shape_rois)
        if shape_rois is None:  # the full head: targets and has_mask on every RoI, negatives without
            full_targets = torch.zeros(7, 9, 9, dtype=torch.float64).index_copy(0, subset, targets)
            full_has = torch.zeros(7, dtype=torch.bool).index_copy(0, subset, has_mask)
            losses = head.losses(out, bags, full_targets, full_has)
            prior = out.prior[subset]
        else:
            losses = head.losses(out, bags, targets, has_mask, shape_rois=shape_rois)
            prior = out.prior
        (sum(losses.values()) + prior.square().mean()).backward()
        grads = {n: q.grad.clone() for n, q in head.named_parameters() if q.grad is not None}
        return losses, prior, x.grad, grads

    full, part = run(None), run(subset)
    for key in ("loss_mil", "loss_shape"):
        torch.testing.assert_close(part[0][key], full[0][key], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(part[1], full[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(part[2], full[2], rtol=1e-12, atol=1e-12)
    assert part[3].keys() == full[3].keys()
    for name in full[3]:
        torch.testing.assert_close(part[3][name], full[3][name], rtol=1e-10, atol=1e-12, msg=name)
    with pytest.raises(ValueError, match="has_mask"):
        head.losses(head(feats, classes, subset), bags, targets, torch.ones(7, dtype=torch.bool), subset)


def test_presets_build_the_authors_head_and_the_light_one():
    def convs(seq):
        return [
            (m.in_channels, m.out_channels, m.kernel_size[0]) for m in seq if isinstance(m, torch.nn.Conv2d)
        ]

    official = ShapePropHead(in_channels=256, num_classes=80)  # the default preset
    assert official.cfg.preset == "official"
    assert convs(official.saliency_learner) == [(256, 256, 3)] * 4
    assert convs([official.saliency_logits]) == [(256, 81, 1)]  # K + 1 maps, background included
    assert convs(official.weight_regressor) == [(256, 256, 3)] * 4
    assert convs([official.weight_logits]) == [(256, 24 * 9, 1)]
    assert convs(official.encoder) == [(1, 24, 3), (24, 24, 3), (24, 24, 3)]
    assert convs(official.decoder) == [(24, 24, 3), (24, 24, 3), (24, 1, 3)]
    assert convs(official.prior_encoder) == [(1, 256, 3)] + [(256, 256, 3)] * 3
    # ReLU between the encoder's and prior encoder's layers only: the last layer may go negative.
    assert not isinstance(official.encoder[-1], torch.nn.ReLU)
    assert not isinstance(official.prior_encoder[-1], torch.nn.ReLU)

    light = ShapePropHead(in_channels=16, num_classes=3, cfg=ShapePropConfig(preset="light"))
    assert convs(light.saliency_learner) == [(16, 16, 3)] * 2  # width = RoI channels
    assert convs([light.saliency_logits]) == [(16, 3, 1)]
    assert convs(light.encoder) == [(1, 16, 3), (16, 16, 3)] and isinstance(light.encoder[-1], torch.nn.ReLU)
    assert convs(light.decoder) == [(16, 1, 1)]
    assert convs(light.prior_encoder) == [(1, 16, 3), (16, 16, 3)]
    assert light.weight_logits.out_channels == 16 * 9  # a 3x3 kernel per latent channel
    # Fields set explicitly win over the preset; the preset fills the others.
    mixed = ShapePropConfig(preset="light", mil_loss="softmax", latent_channels=8)
    assert (mixed.mil_loss, mixed.latent_channels, mixed.saliency_layers) == ("softmax", 8, 2)
    assert ShapePropConfig.model_validate(mixed.model_dump()) == mixed
    with pytest.raises(ValueError, match="preset"):
        ShapePropConfig(preset="authors")


def test_official_preset_parameter_count_matches_the_authors_layer_list():
    """The head the authors' code adds to R-50-FPN Mask R-CNN on COCO (80 classes), from its layer
    list (ucbdrive/ShapeProp: shapeprop_head.py, roi_mask_feature_extractors.py); docs/fidelity.md."""
    from shapeprop.models.mask_branch import MaskBranch
    from shapeprop.models.params import count_parameters

    authors = [  # (in, out, kernel) of every conv
        *[(256, 256, 3)] * 4,  # ShapePropFeatureExtractor (activating), CONV_LAYERS (256, 256, 256, 256)
        (256, 81, 1),  # ShapePropPredictor: 1x1 to ROI_BOX_HEAD.NUM_CLASSES (background included)
        *[(256, 256, 3)] * 4,  # ShapePropFeatureExtractor (propagating; SHARE_FEATURE False)
        (256, 24 * 9, 1),  # ShapePropWeightRegressor: LATENT_DIM 24, 3x3 windows
        (1, 24, 3),
        (24, 24, 3),
        (24, 24, 3),  # ShapePropEncoder
        (24, 24, 3),
        (24, 24, 3),
        (24, 1, 3),  # ShapePropDecoder
        (1, 256, 3),
        *[(256, 256, 3)] * 3,  # MaskRCNNFPNFeatureExtractor.encoder (the shape prior)
    ]
    expected = sum(i * o * k * k + o for i, o, k in authors) + 256 * 256 * 9  # mask_fcn1 takes 512 channels
    assert expected == 7_180_882

    def branch(shapeprop):
        return MaskBranch(["0"], 256, 80, 256, class_agnostic=True, shapeprop=shapeprop)

    added = count_parameters(branch(ShapePropConfig())) - count_parameters(branch(None))
    assert added == expected
    light = count_parameters(branch(ShapePropConfig(preset="light"))) - count_parameters(branch(None))
    assert light < expected / 2


def test_prior_normalisations_by_hand():
    from shapeprop.head import normalise_activation, relu_max_normalise

    logits = torch.tensor([[-2.0, 0.0], [1.0, 4.0]]).view(1, 1, 2, 2)
    torch.testing.assert_close(
        relu_max_normalise(logits),
        torch.tensor([[0.0, 0.0], [0.25, 1.0]]).view(1, 1, 2, 2),
        atol=1e-5,
        rtol=0,
    )
    torch.testing.assert_close(normalise_activation(logits), (logits + 2) / (6 + 1e-6))
    assert relu_max_normalise(torch.full((1, 1, 2, 2), -1.0)).abs().sum() == 0  # nothing positive: all zero


def test_bad_inputs_are_named():
    head = ShapePropHead(in_channels=6, num_classes=4, cfg=SMALL)
    with pytest.raises(ValueError, match="classes must be"):
        head(torch.randn(3, 6, 7, 7), torch.zeros(2, dtype=torch.long))
    out = head(torch.randn(3, 6, 7, 7), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="mask_targets"):
        head.losses(
            out, torch.ones(3, dtype=torch.long), torch.zeros(3, 8, 8), torch.ones(3, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="gt_labels"):
        assign_bags(torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))


def test_reconstruction_loss_only_on_positive_rois_with_masks():
    torch.manual_seed(0)
    head = ShapePropHead(in_channels=6, num_classes=2, cfg=SMALL)
    out = head(torch.randn(4, 6, 7, 7), torch.tensor([0, 1, 0, 1]))
    bags = torch.tensor([1, 2, 1, 0])  # the last RoI is a negative bag
    has_mask = torch.tensor([True, False, True, True])
    targets = (torch.rand(4, 7, 7) > 0.5).float()
    loss = head.losses(out, bags, targets, has_mask)["loss_shape"]
    expected = F.binary_cross_entropy_with_logits(out.shape_logits[[0, 2], 0], targets[[0, 2]])
    torch.testing.assert_close(loss, expected)
    # Whatever the targets of RoIs without a mask (or of negative bags) hold changes nothing.
    garbage = targets.clone()
    garbage[1] = float("nan")
    garbage[3] = 1.0 - garbage[3]
    torch.testing.assert_close(head.losses(out, bags, garbage, has_mask)["loss_shape"], loss)
    (grad,) = torch.autograd.grad(loss, out.shape_logits)
    assert grad[[1, 3]].abs().sum() == 0 and grad[[0, 2]].abs().sum() > 0


def test_reconstruction_loss_is_zero_without_masks_and_weights_apply():
    cfg = SMALL.model_copy(update={"mil_loss_weight": 0.5, "reconstruction_loss_weight": 3.0})
    head = ShapePropHead(in_channels=6, num_classes=2, cfg=cfg)
    out = head(torch.randn(3, 6, 7, 7), torch.tensor([0, 1, 0]))
    bags = torch.tensor([1, 2, 0])
    losses = head.losses(out, bags, torch.rand(3, 7, 7), torch.zeros(3, dtype=torch.bool))
    assert losses["loss_shape"].item() == 0.0 and losses["loss_shape"].requires_grad
    torch.testing.assert_close(losses["loss_mil"], 0.5 * mil_loss(out.saliency_logits, bags, cfg.mil_loss))
    with_masks = head.losses(out, bags, torch.ones(3, 7, 7), torch.ones(3, dtype=torch.bool))
    expected = 3.0 * F.binary_cross_entropy_with_logits(out.shape_logits[:2, 0], torch.ones(2, 7, 7))
    torch.testing.assert_close(with_masks["loss_shape"], expected)
    sum(losses.values()).backward()


def test_initial_saliency_is_low():  # the light preset's calibrated init
    head = ShapePropHead(in_channels=6, num_classes=3, cfg=ShapePropConfig(preset="light", hidden_channels=8))
    out = head(torch.randn(2, 6, 5, 5), torch.tensor([0, 2]))
    assert math.isclose(out.saliency.mean().item(), 0.01, rel_tol=0.2)


def _disks(num: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """RoI features [seed, boundary ring] of random disks near the centre, and the disks as targets."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cy = torch.rand(num, 1, 1, generator=gen) * 2 + (size / 2 - 1)
    cx = torch.rand(num, 1, 1, generator=gen) * 2 + (size / 2 - 1)
    radius = torch.rand(num, 1, 1, generator=gen) * 1.5 + 2.5
    dist = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
    seed = (dist <= 1.2).float()
    ring = ((dist - radius).abs() <= 0.6).float()
    return torch.stack([seed, ring], 1), (dist <= radius).float()


def test_head_learns_to_grow_a_seed_into_a_disk():
    """Trained on its own losses (all RoIs positive bags with masks), the head turns a seed into the
    full disk its boundary encloses: the held-out reconstruction loss falls at least 6x (about 18x
    observed) and the thresholded Shape Activation overlaps the disks with IoU > 0.8 (about 0.93)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    size, batch = 12, 16
    cfg = ShapePropConfig(saliency_layers=0, hidden_channels=16, latent_channels=8)
    head = ShapePropHead(in_channels=2, num_classes=1, cfg=cfg)
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2)
    test_feats, test_disks = _disks(128, size, gen)

    def held_out() -> tuple[float, float]:
        with torch.no_grad():
            out = head(test_feats, torch.zeros(128, dtype=torch.long))
            ones = torch.ones(128, dtype=torch.long)
            loss = head.losses(out, ones, test_disks, ones.bool())["loss_shape"].item()
            pred, truth = out.shape_activation[:, 0] > 0.5, test_disks > 0
            iou = ((pred & truth).sum((1, 2)) / (pred | truth).sum((1, 2))).mean().item()
        return loss, iou

    initial, _ = held_out()
    classes, bags, has_mask = (
        torch.zeros(batch, dtype=torch.long),
        torch.ones(batch, dtype=torch.long),
        torch.ones(batch, dtype=torch.bool),
    )
    for _ in range(200):
        feats, disks = _disks(batch, size, gen)
        loss = sum(head.losses(head(feats, classes), bags, disks, has_mask).values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    final, iou = held_out()
    assert final < initial / 6, (initial, final)
    assert iou > 0.8, iou


def autocast_case(device: str, dtype: torch.dtype, **cfg):
    """A light ShapeProp head on random RoIs; returns run(autocast) -> (output, parameter gradients),
    float32 inputs cast through `dtype` either way (also tools/cuda_grad_noise.py)."""
    torch.manual_seed(0)
    head = ShapePropHead(
        32, 5, ShapePropConfig(preset="light", hidden_channels=32, latent_channels=8, **cfg)
    ).to(device)
    feats = torch.randn(12, 32, 14, 14, device=device)
    classes = torch.arange(12, device=device) % 5
    rows = torch.tensor([0, 3, 4, 9], device=device)
    targets = (
        (classes + 1) * (torch.arange(12, device=device) % 2),
        torch.rand(4, 14, 14, device=device),
        torch.ones(4, dtype=torch.bool, device=device),
    )

    def run(autocast: bool):
        head.zero_grad()
        with torch.autocast(device, dtype=dtype, enabled=autocast):
            out = head(feats.to(dtype) if autocast else feats.to(dtype).float(), classes, shape_rois=rows)
            losses = head.losses(out, *targets, shape_rois=rows)
        (sum(losses.values()) + out.prior.square().mean()).backward()  # the prior feeds the mask head
        return out, {k: p.grad.clone() for k, p in head.named_parameters()}

    return head, run


@pytest.mark.parametrize(
    ("device", "dtype"),
    [
        ("cpu", torch.bfloat16),
        pytest.param("cuda", torch.float16, marks=pytest.mark.gpu),
        pytest.param("cuda", torch.bfloat16, marks=pytest.mark.gpu),
    ],
)
def test_head_computes_in_float32_under_autocast(device, dtype):
    """Under AMP the head gives exactly its float32 outputs, and its losses and gradients are those
    of float32: half-precision inputs (the RoI features of an autocast backbone) are promoted."""
    head, run = autocast_case(device, dtype)
    (full, full_grads), (amp, amp_grads) = run(False), run(True)
    for name in ("saliency_logits", "shape_logits", "shape_activation", "prior"):
        assert getattr(amp, name).dtype == torch.float32
        torch.testing.assert_close(getattr(amp, name), getattr(full, name), rtol=0, atol=0)
    # On CUDA, backward kernels that sum with atomicAdd (the operator's kernel gradients among them)
    # reorder float32 sums, so two identical float32 runs already differ, by up to 2.4e-7 absolute,
    # and autocast's from float32's by up to 3.6e-7 (H100, 2026-11-28, 10 repeats of each:
    # tools/cuda_grad_noise.py); the outputs above stay bitwise equal.
    rtol, atol = (1e-6, 1e-9) if device == "cpu" else (1e-3, 2e-6)
    for name, grad in full_grads.items():
        torch.testing.assert_close(amp_grads[name], grad, rtol=rtol, atol=atol)
    assert head.weight_logits.weight.grad.abs().sum() > 0  # the gradient crossed the operator


def test_saliency_autocast_runs_the_saliency_learner_in_bfloat16_and_learns_as_float32():
    """`saliency_autocast`: the saliency learner's convolutions take the run's bfloat16 (its logits
    differ from float32's by rounding), the rest stays float32, and every parameter's gradient points
    where float32's does (one step, cosine > 0.99; 0.998 measured for the first conv)."""
    _, reference = autocast_case("cpu", torch.bfloat16)
    _, run = autocast_case("cpu", torch.bfloat16, saliency_autocast=True)
    (full, full_grads), (amp, amp_grads) = reference(False), run(True)
    assert amp.saliency_logits.dtype == torch.float32 and amp.prior.dtype == torch.float32
    assert not torch.equal(amp.saliency_logits, full.saliency_logits)  # computed in bfloat16
    torch.testing.assert_close(amp.saliency_logits, full.saliency_logits, rtol=0.05, atol=0.05)
    torch.testing.assert_close(amp.shape_activation, full.shape_activation, rtol=0, atol=1e-4)
    for name, grad in full_grads.items():
        cosine = torch.nn.functional.cosine_similarity(amp_grads[name].flatten(), grad.flatten(), dim=0)
        assert cosine > 0.99, (name, float(cosine))
    _, plain = autocast_case("cpu", torch.bfloat16, saliency_autocast=True)
    torch.testing.assert_close(plain(False)[0].saliency_logits, full.saliency_logits, rtol=0, atol=0)
