"""The mask branch's training wiring with ShapeProp, on a hand-made batch of three images: which rows
each loss term reads (per-image offsets, positives first, MIL bags), against hand-written indices;
then the core's edges: the RoI sample's order, one masked RoI, no or one detection, the pooler and
head against torchvision's Mask R-CNN, per-image lists that disagree."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import MultiScaleRoIAlign as TorchvisionMultiScaleRoIAlign

from shapeprop.config import ShapePropConfig
from shapeprop.models.mask_branch import MaskBranch, shapeprop_rois

pytestmark = pytest.mark.usefixtures("one_thread")

K = 3  # foreground classes
C = 4  # feature channels
S = 6  # RoI resolution; mask logits are 2S x 2S
IMAGE = 32  # image side; the single feature map is 16 x 16 (scale 1/2)

# Per image: GT boxes, 1-based labels, a constant mask value per GT (so a RoI's mask target is that
# value wherever it lies) and has_mask; then the RoIs, positives interleaved with negatives, with
# their labels and matched GT. Negatives overlap no GT; each positive has IoU > 0.9 with its GT.
BATCH = [
    dict(
        gt=[[2, 2, 14, 14], [16, 16, 30, 28]],
        gt_labels=[1, 3],
        values=[0.2, 0.9],
        has_mask=[True, True],
        rois=[[0, 20, 8, 30], [17, 16, 30, 28], [20, 0, 30, 10], [2, 2, 14, 13], [4, 16, 12, 22]],
        labels=[0, 3, 0, 1, 0],
        matched=[0, 1, 0, 0, 0],
    ),
    dict(  # no positive RoI in this image
        gt=[[4, 4, 20, 20]],
        gt_labels=[2],
        values=[0.5],
        has_mask=[True],
        rois=[[22, 22, 30, 30], [0, 24, 6, 30]],
        labels=[0, 0],
        matched=[0, 0],
    ),
    dict(
        gt=[[8, 8, 24, 24], [0, 0, 10, 12]],
        gt_labels=[2, 1],
        values=[0.7, 0.1],
        has_mask=[False, True],
        rois=[[8, 8, 24, 23], [26, 0, 32, 8], [0, 0, 10, 11], [1, 0, 10, 12]],
        labels=[2, 0, 1, 1],
        matched=[0, 0, 1, 1],
    ),
]
# What the ShapeProp head must see, written out by hand: per image its positives, then its negatives.
ORDER = [[1, 3, 0, 2, 4], [0, 1], [0, 2, 3, 1]]
POS_ROWS = [0, 1, 7, 8, 9]  # the positives among the 5 + 2 + 4 head rows
BAGS = [3, 1, 0, 0, 0, 0, 0, 2, 1, 1, 0]  # MIL bag of each head row (IoU with its own image's GT)
HEAD_CLASSES = [2, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]  # 0-based; negatives as class 0
POS_LABELS = [3, 1, 2, 1, 1]
POS_TARGETS = [0.9, 0.2, 0.7, 0.1, 0.1]
POS_HAS_MASK = [True, True, False, True, True]


def _cfg(mil_loss="softmax"):
    return ShapePropConfig(
        preset="light",
        mil_loss=mil_loss,
        hidden_channels=8,
        latent_channels=4,
        prior_channels=3,
        saliency_layers=1,
        weight_layers=1,
        encoder_layers=1,
        prior_layers=1,
        steps=3,
    )


def _branch(cfg, cap=None, seed=0):
    torch.manual_seed(seed)
    branch = MaskBranch(
        ["0"], C, K, head_channels=8, shapeprop=cfg, resolution=S, shapeprop_rois_per_image=cap
    )
    return branch.double()


def _inputs(batch=BATCH, seed=0):
    gen = torch.Generator().manual_seed(seed)
    features = {"0": torch.randn(len(batch), C, IMAGE // 2, IMAGE // 2, generator=gen, dtype=torch.float64)}
    f64 = dict(dtype=torch.float64)
    rois = [torch.tensor(b["rois"], **f64).view(-1, 4) for b in batch]
    labels = [torch.tensor(b["labels"], dtype=torch.long) for b in batch]
    matched = [torch.tensor(b["matched"], dtype=torch.long) for b in batch]
    targets = [
        {
            "boxes": torch.tensor(b["gt"], **f64).view(-1, 4),
            "labels": torch.tensor(b["gt_labels"], dtype=torch.long),
            "masks": torch.tensor(b["values"], **f64).view(-1, 1, 1).expand(-1, IMAGE, IMAGE).contiguous(),
            "has_mask": torch.tensor(b["has_mask"], dtype=torch.bool),
        }
        for b in batch
    ]
    return features, rois, [(IMAGE, IMAGE)] * len(batch), labels, matched, targets


def _run(branch, inputs):
    """The losses, and what the pooler, the ShapeProp head, the mask head and the predictor saw."""
    seen = {}
    hooks = [
        branch.roi_pool.register_forward_hook(lambda m, args, out: seen.update(boxes=args[1], pooled=out)),
        branch.shapeprop.register_forward_hook(
            lambda m, args, kwargs, out: seen.update(head_args=args, head_kwargs=kwargs, out=out),
            with_kwargs=True,
        ),
        branch.head.register_forward_pre_hook(lambda m, args: seen.update(mask_input=args[0])),
        branch.predictor.register_forward_hook(lambda m, args, out: seen.update(logits=out)),
    ]
    try:
        losses = branch.losses(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return losses, seen


def _bce(logits, values):
    """Mean per-pixel BCE of each map [R, H, W] against its constant target; [R]."""
    target = torch.tensor(values, dtype=logits.dtype).view(-1, 1, 1).expand_as(logits)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(1, 2))


def _check_rows(branch, losses, seen, pos_rows, bags, head_classes, mil_loss):
    """Every loss term against a reference built from the hand-written rows."""
    pooled, out = seen["pooled"], seen["out"]
    pos_rows = torch.tensor(pos_rows)
    assert torch.equal(seen["head_args"][0], pooled)  # the head sees every pooled RoI, in that order
    assert seen["head_args"][1].tolist() == head_classes
    assert seen["head_kwargs"]["shape_rois"].tolist() == pos_rows.tolist()
    # The shape path ran on the positives' features and classes.
    alone = branch.shapeprop(pooled[pos_rows], torch.tensor(POS_LABELS) - 1)
    torch.testing.assert_close(out.shape_logits, alone.shape_logits, rtol=1e-12, atol=1e-12)
    # The mask head gets the positives' features with their own shape prior appended.
    torch.testing.assert_close(seen["mask_input"], torch.cat([pooled[pos_rows], alone.prior], dim=1))

    has_mask = torch.tensor(POS_HAS_MASK)
    logits = seen["logits"][torch.arange(len(POS_LABELS)), torch.tensor(POS_LABELS) - 1]
    loss_mask = _bce(logits, POS_TARGETS)[has_mask].mean()
    loss_shape = _bce(out.shape_logits[:, 0], POS_TARGETS)[has_mask].mean()
    pooled_saliency = out.saliency_logits.mean(dim=(2, 3))
    bags = torch.tensor(bags)
    if mil_loss == "softmax":  # background map first
        loss_mil = F.cross_entropy(pooled_saliency, bags)
    else:  # one BCE per class map, summed, averaged over RoIs
        one_hot = F.one_hot(bags, K + 1)[:, 1:].to(pooled_saliency.dtype)
        loss_mil = F.binary_cross_entropy_with_logits(pooled_saliency, one_hot, reduction="sum") / len(bags)
    assert set(losses) == {"loss_mask", "loss_mil", "loss_shape"}
    torch.testing.assert_close(losses["loss_mask"], loss_mask, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losses["loss_shape"], loss_shape, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losses["loss_mil"], loss_mil, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mil_loss", ["softmax", "sigmoid"])
def test_each_loss_term_reads_its_own_rows(mil_loss):
    branch = _branch(_cfg(mil_loss))
    rois = _inputs()[1]
    losses, seen = _run(branch, _inputs())
    # Per image, the pooler gets the positives (in their order) first, then the negatives.
    assert len(seen["boxes"]) == 3
    for boxes, image_rois, order in zip(seen["boxes"], rois, ORDER, strict=True):
        assert torch.equal(boxes, image_rois[order])
    _check_rows(branch, losses, seen, POS_ROWS, BAGS, HEAD_CLASSES, mil_loss)


def test_capped_rois_keep_every_positive_first():
    # Cap 3: image 0 keeps its 2 positives and 1 of its 3 negatives, image 1 its 2 negatives,
    # image 2 its 3 positives only.
    branch = _branch(_cfg(), cap=3)
    rois = _inputs()[1]
    torch.manual_seed(1)
    losses, seen = _run(branch, _inputs())
    first, second, third = seen["boxes"]
    assert torch.equal(first[:2], rois[0][[1, 3]])
    assert any(torch.equal(first[2], rois[0][i]) for i in (0, 2, 4))
    assert torch.equal(second, rois[1])
    assert torch.equal(third, rois[2][[0, 2, 3]])
    _check_rows(
        branch, losses, seen, [0, 1, 5, 6, 7], [3, 1, 0, 0, 0, 2, 1, 1], [2, 0, 0, 0, 0, 1, 0, 0], "softmax"
    )


def test_batch_losses_and_gradients_equal_the_images_taken_one_by_one():
    """The batch's means are the per-image means weighted by their row counts: the positives with a
    mask (mask and shape losses) and all RoIs (MIL)."""
    branch = _branch(_cfg())

    def grads_of(losses):
        branch.zero_grad()
        sum(losses.values()).backward()
        return {n: p.grad.clone() for n, p in branch.named_parameters() if p.grad is not None}

    batch = branch.losses(*_inputs())
    batch_grads = grads_of(batch)
    features, rois, shapes, labels, matched, targets = _inputs()
    parts, weights = [], []
    for i in range(3):
        one = branch.losses(
            {"0": features["0"][i : i + 1]}, [rois[i]], shapes[:1], [labels[i]], [matched[i]], [targets[i]]
        )
        with_mask = targets[i]["has_mask"][matched[i]] & (labels[i] > 0)
        parts.append(one)
        weights.append(
            {"loss_mask": with_mask.sum(), "loss_shape": with_mask.sum(), "loss_mil": len(rois[i])}
        )
    assert [int(w["loss_mask"]) for w in weights] == [2, 0, 2]  # hand count of positives with a mask
    combined = {
        k: sum(w[k] * p[k] for p, w in zip(parts, weights, strict=True)) / sum(w[k] for w in weights)
        for k in batch
    }
    for k in batch:
        torch.testing.assert_close(batch[k], combined[k], rtol=1e-12, atol=1e-12, msg=k)
    combined_grads = grads_of(combined)
    assert batch_grads.keys() == combined_grads.keys()
    for name, grad in batch_grads.items():
        torch.testing.assert_close(grad, combined_grads[name], rtol=1e-10, atol=1e-12, msg=name)


def test_batch_without_positive_rois_trains_only_the_saliency():
    # Only the negatives of each image, an image with no GT at all, and one with no RoI.
    def negatives_only(b):
        rois = [r for r, lab in zip(b["rois"], b["labels"], strict=True) if lab == 0]
        return dict(b, rois=rois, labels=[0] * len(rois), matched=[0] * len(rois))

    no_gt = dict(gt=[], gt_labels=[], values=[], has_mask=[], rois=[[0, 0, 8, 8]], labels=[0], matched=[0])
    no_roi = dict(BATCH[1], rois=[], labels=[], matched=[])
    batch = [*map(negatives_only, BATCH), no_gt, no_roi]
    branch = _branch(_cfg())
    losses = branch.losses(*_inputs(batch))
    assert losses["loss_mask"] == 0 and losses["loss_shape"] == 0
    # MIL: every one of the 3 + 2 + 1 + 1 RoIs is a negative bag; the reference from the pooled RoIs.
    pooled = branch.roi_pool(
        _inputs(batch)[0],
        [torch.tensor(b["rois"], dtype=torch.float64).view(-1, 4) for b in batch],
        [(IMAGE, IMAGE)] * 5,
    )
    saliency = branch.shapeprop.saliency_logits(branch.shapeprop.saliency_learner(pooled))
    expected = F.cross_entropy(saliency.mean(dim=(2, 3)), torch.zeros(7, dtype=torch.long))
    torch.testing.assert_close(losses["loss_mil"], expected, rtol=1e-12, atol=1e-12)
    # The zero losses keep the graph whole (DDP needs every parameter in it) and give zero gradients.
    assert losses["loss_mask"].requires_grad and losses["loss_shape"].requires_grad
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in branch.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["shapeprop.saliency_learner.0.weight"].abs().sum() > 0
    shape_path = (
        "head.",
        "predictor.",
        "shapeprop.weight",
        "shapeprop.encoder",
        "shapeprop.decoder",
        "shapeprop.prior",
    )
    for name, grad in grads.items():
        if name.startswith(shape_path):
            assert not grad.any(), name


def test_predict_gives_each_detection_its_own_maps():
    """Inference on 2, 0 and 3 detections: each image gets its own rows, each detection the maps
    of its own label, against the head's layers run by hand."""
    branch = _branch(_cfg()).eval()
    features = _inputs()[0]
    boxes = [torch.tensor(b["rois"], dtype=torch.float64)[[1, 3]] for b in BATCH[:1]]
    boxes += [torch.zeros(0, 4, dtype=torch.float64), torch.tensor(BATCH[2]["rois"], dtype=torch.float64)[:3]]
    labels = [torch.tensor([3, 1]), torch.zeros(0, dtype=torch.long), torch.tensor([2, 3, 1])]
    with torch.no_grad():
        results = branch.predict(features, boxes, labels, [(IMAGE, IMAGE)] * 3)
        pooled = branch.roi_pool(features, boxes, [(IMAGE, IMAGE)] * 3)
        classes = torch.cat(labels) - 1
        rows = torch.arange(len(classes))
        sp = branch.shapeprop
        # softmax MIL: the background map comes first
        saliency = sp.saliency_logits(sp.saliency_learner(pooled))[rows, classes + 1].sigmoid()
        out = sp(pooled, classes)
        logits = branch.predictor(branch.head(torch.cat([pooled, out.prior], dim=1)))
        masks = logits[rows, classes].sigmoid()
    assert [len(r["masks"]) for r in results] == [2, 0, 3]
    got = {
        key: torch.cat([r[key][:, 0] for r in results]) for key in ("masks", "saliency", "shape_activation")
    }
    torch.testing.assert_close(got["saliency"], saliency, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        got["shape_activation"], out.shape_logits[:, 0].sigmoid(), rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(got["masks"], masks, rtol=1e-12, atol=1e-12)
    assert got["masks"].shape == (5, 2 * S, 2 * S)


def _plain_branch(seed=0):
    """The branch without ShapeProp."""
    torch.manual_seed(seed)
    return MaskBranch(["0"], C, K, head_channels=8, resolution=S).double()


def test_loss_mask_with_one_masked_roi_is_that_rois_loss():
    # One image: a positive whose GT has no mask, one with a mask (value 0.1, class 1), a negative.
    # The mean over the one weighted RoI is that RoI's own BCE (the normaliser is 1, not clamped up).
    image = dict(
        BATCH[2], rois=[[8, 8, 24, 23], [0, 0, 10, 11], [26, 0, 32, 8]], labels=[2, 1, 0], matched=[0, 1, 0]
    )
    branch = _plain_branch()
    seen = {}
    branch.predictor.register_forward_hook(lambda m, args, out: seen.update(logits=out))
    losses = branch.losses(*_inputs([image]))
    assert set(losses) == {"loss_mask"}
    assert seen["logits"].shape == (2, K, 2 * S, 2 * S)  # the two positives
    expected = _bce(seen["logits"][1:, 0], [0.1])[0]
    torch.testing.assert_close(losses["loss_mask"], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("with_shapeprop", [False, True])
def test_predict_without_detections_gives_empty_maps(with_shapeprop):
    # No detection in any image: per image an empty [0, 1, 2S, 2S] mask batch of the features' dtype,
    # and with ShapeProp (only then) empty [0, 1, S, S] saliency and shape activation.
    branch = (_branch(_cfg()) if with_shapeprop else _plain_branch()).eval()
    features = _inputs()[0]
    boxes = [torch.zeros(0, 4, dtype=torch.float64)] * 3
    labels = [torch.zeros(0, dtype=torch.long)] * 3
    with torch.no_grad():
        results = branch.predict(features, boxes, labels, [(IMAGE, IMAGE)] * 3)
    assert len(results) == 3
    for result in results:
        extra = {"saliency", "shape_activation"} if with_shapeprop else set()
        assert set(result) == {"masks"} | extra
        assert result["masks"].shape == (0, 1, 2 * S, 2 * S) and result["masks"].dtype == torch.float64
        for key in extra:
            assert result[key].shape == (0, 1, S, S) and result[key].dtype == torch.float64


def test_predict_on_a_single_detection():
    # One detection in the batch (the first image; the second has none): its mask is computed.
    branch = _plain_branch().eval()
    features = {"0": _inputs()[0]["0"][:2]}
    boxes = [
        torch.tensor([[2.0, 2.0, 14.0, 14.0]], dtype=torch.float64),
        torch.zeros(0, 4, dtype=torch.float64),
    ]
    labels = [torch.tensor([2]), torch.zeros(0, dtype=torch.long)]
    with torch.no_grad():
        first, second = branch.predict(features, boxes, labels, [(IMAGE, IMAGE)] * 2)
        logits = branch.mask_logits(branch.roi_pool(features, boxes, [(IMAGE, IMAGE)] * 2))
    expected = logits[:, 1:2].sigmoid()  # label 2: channel 1
    assert first["masks"].shape == (1, 1, 2 * S, 2 * S) and second["masks"].shape == (0, 1, 2 * S, 2 * S)
    torch.testing.assert_close(first["masks"], expected, rtol=1e-12, atol=1e-12)


def _labels(num, positives):
    labels = torch.zeros(num, dtype=torch.long)
    labels[positives] = torch.arange(len(positives)) % K + 1
    return labels


# 300 RoIs, 40 positives spread among them: long enough for torch's unstable CPU sort to reorder ties.
MANY = 300
MANY_POS = list(range(3, MANY, 7))[:40]


@pytest.mark.parametrize("cap", [None, MANY, MANY + 5])
def test_shapeprop_rois_uncapped_keep_the_given_order(cap):
    # Without a cap (or one not below the RoI count) the head sees every RoI: the positives in their
    # order (the loss's shape rows and targets assume it), then the negatives in theirs; no RNG drawn.
    labels = _labels(MANY, MANY_POS)
    negatives = [i for i in range(MANY) if i not in MANY_POS]
    state = torch.get_rng_state()
    order = shapeprop_rois(labels, len(MANY_POS), cap)
    assert order.tolist() == MANY_POS + negatives
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("cap", [20, 100])
def test_shapeprop_rois_capped_keep_every_positive_in_order(cap):
    # A cap below the RoI count keeps every positive, in order, then max(cap - positives, 0) negatives.
    labels = _labels(MANY, MANY_POS)
    torch.manual_seed(0)
    order = shapeprop_rois(labels, len(MANY_POS), cap).tolist()
    assert len(order) == max(cap, len(MANY_POS))
    assert order[: len(MANY_POS)] == MANY_POS
    rest = order[len(MANY_POS) :]
    assert len(set(rest)) == len(rest) and not set(rest) & set(MANY_POS)


def test_mask_rois_pooled_as_torchvisions_mask_rcnn():
    # The RoI features are torchvision's Mask R-CNN mask pooling (RoIAlign, sampling ratio 2).
    branch = _plain_branch()
    features, rois = _inputs()[:2]
    reference = TorchvisionMultiScaleRoIAlign(["0"], S, sampling_ratio=2)
    shapes = [(IMAGE, IMAGE)] * 3
    torch.testing.assert_close(
        branch.roi_pool(features, rois, shapes), reference(features, rois, shapes), rtol=1e-10, atol=1e-10
    )


def test_mask_head_sees_a_9x9_window():
    # Mask R-CNN's head: four 3x3 convs, dilation 1, so an output pixel depends on the 9x9 input
    # window around it (and nothing further away).
    branch = _plain_branch()
    x = torch.randn(1, C, 15, 15, dtype=torch.float64, requires_grad=True)
    branch.head(x)[0, :, 7, 7].sum().backward()
    rows, cols = torch.where(x.grad.abs().sum(dim=(0, 1)) > 0)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (3, 11, 3, 11)


@pytest.mark.parametrize("field", ["rois", "matched_idxs", "targets"])
def test_per_image_lists_of_other_lengths_are_refused(field):
    # An image more in the RoIs, the matches or the targets than in the labels is an error, not
    # silently dropped (zip(strict=True) in the plain path, where nothing else would notice).
    features, rois, shapes, labels, matched, targets = _inputs()
    inputs = dict(rois=rois, matched_idxs=matched, targets=targets)
    inputs[field] = [*inputs[field], inputs[field][0]]
    with pytest.raises(ValueError, match=r"zip\(\) argument \d is (longer|shorter)"):
        _plain_branch().losses(
            features, inputs["rois"], shapes, labels, inputs["matched_idxs"], inputs["targets"]
        )
