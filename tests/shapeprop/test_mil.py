"""Bag labelling (Eq. 2) and the MIL loss (Eq. 3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from shapeprop.mil import assign_bags, assign_bags_batched, mil_loss


def test_softmax_mil_loss_by_hand():
    logits = torch.randn(3, 4, 5, 5, requires_grad=True)  # background + 3 classes
    bags = torch.tensor([0, 2, 3])
    pooled = logits.detach().mean(dim=(2, 3))
    by_hand = -sum(pooled[i, b] - pooled[i].exp().sum().log() for i, b in enumerate(bags.tolist())) / 3
    torch.testing.assert_close(mil_loss(logits, bags, "softmax"), by_hand)
    mil_loss(logits, bags, "softmax").backward()
    assert logits.grad[0, 0].sum() < 0  # raising the negative bag's background map lowers the loss
    with pytest.raises(ValueError, match="form"):
        mil_loss(logits, bags, "hinge")


def test_assign_bags_on_hand_made_boxes():
    gt_boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    gt_labels = torch.tensor([3, 7])
    rois = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # identical to gt 0: IoU 1
            [0.0, 0.0, 10.0, 6.0],  # IoU 0.6 with gt 0
            [0.0, 0.0, 10.0, 5.0],  # IoU exactly 0.5: not above t, negative
            [21.0, 21.0, 31.0, 31.0],  # IoU 81/119 with gt 1
            [50.0, 50.0, 60.0, 60.0],  # overlaps nothing
            [5.0, 5.0, 25.0, 25.0],  # overlaps both, IoU < 0.5 with each
        ]
    )
    bags, matched = assign_bags(rois, gt_boxes, gt_labels, iou_threshold=0.5)
    assert bags.tolist() == [4, 4, 0, 8, 0, 0]
    assert matched.tolist() == [0, 0, -1, 1, -1, -1]
    # A RoI above t with two ground truths takes the one of highest IoU.
    gt_close = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0]])
    bags, matched = assign_bags(torch.tensor([[0.0, 0.0, 10.0, 9.5]]), gt_close, torch.tensor([0, 1]))
    assert matched.tolist() == [0] and bags.tolist() == [1]
    # A lower threshold turns the IoU-0.5 RoI positive.
    bags, _ = assign_bags(rois[2:3], gt_boxes, gt_labels, iou_threshold=0.4)
    assert bags.tolist() == [4]


def test_assign_bags_without_ground_truth():
    bags, matched = assign_bags(torch.rand(5, 4) * 10, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert bags.tolist() == [0] * 5 and matched.tolist() == [-1] * 5
    bags, matched = assign_bags(torch.zeros(0, 4), torch.rand(2, 4), torch.zeros(2, dtype=torch.long))
    assert bags.shape == matched.shape == (0,)


def test_assign_bags_batched_matches_each_image_alone():
    """A RoI is matched against its own image's boxes only, even where another image's box fits it."""
    gen = torch.Generator().manual_seed(0)

    def boxes(n):
        xy = torch.rand(n, 2, generator=gen) * 40
        return torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=gen) * 20], 1)

    gts = [boxes(3), boxes(0), boxes(5)]
    labels = [torch.randint(0, 6, (len(g),), generator=gen) for g in gts]
    # Each image's RoIs: jittered copies of every image's GT boxes (so other images' boxes fit them
    # too) and random boxes.
    everything = torch.cat(gts)
    rois = [torch.cat([everything + torch.rand(len(everything), 4, generator=gen), boxes(7)]) for _ in gts]
    rois.append(boxes(4))  # a fourth image with RoIs but an empty ground truth...
    gts.append(torch.zeros(0, 4))
    labels.append(torch.zeros(0, dtype=torch.long))
    expected = torch.cat(
        [assign_bags(r, g, lab, 0.5)[0] for r, g, lab in zip(rois, gts, labels, strict=True)]
    )
    batched = assign_bags_batched(rois, gts, labels, 0.5)
    assert torch.equal(batched, expected)
    assert (expected > 0).sum() >= 8  # the own-image copies are positive
    everything_alone = assign_bags(torch.cat(rois), everything, torch.cat(labels), 0.5)[0]
    assert not torch.equal(everything_alone, expected)  # ignoring the images would differ
    assert assign_bags_batched([], [], []).shape == (0,)
    with pytest.raises(ValueError, match="images"):
        assign_bags_batched(rois, gts[:2], labels)


def test_mil_loss_value_and_direction():
    logits = torch.randn(3, 4, 5, 5, requires_grad=True)
    bags = torch.tensor([0, 2, 4])  # negative, class 1, class 3
    loss = mil_loss(logits, bags)
    pooled = logits.mean(dim=(2, 3))
    expected = 0.0
    for r, bag in enumerate(bags.tolist()):
        for k in range(4):
            target = 1.0 if bag == k + 1 else 0.0
            expected += F.binary_cross_entropy_with_logits(pooled[r, k], torch.tensor(target))
    torch.testing.assert_close(loss, expected / 3)
    (grad,) = torch.autograd.grad(loss, logits)
    # Descending the loss raises the positive class's saliency and lowers every other map.
    assert (grad[1, 1] < 0).all() and (grad[2, 3] < 0).all()
    assert (grad[0] > 0).all() and (grad[1, [0, 2, 3]] > 0).all()


def test_mil_loss_is_bounded_and_zero_for_no_rois():
    very_confident = torch.full((2, 3, 4, 4), 50.0)
    very_confident[0] = -50.0  # the negative bag scores low everywhere
    very_confident[1, [1, 2]] = -50.0
    assert mil_loss(very_confident, torch.tensor([0, 1])).item() < 1e-6  # bounded below by 0
    empty = torch.zeros(0, 3, 4, 4, requires_grad=True)
    loss = mil_loss(empty, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
