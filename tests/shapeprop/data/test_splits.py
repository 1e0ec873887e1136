"""Semi-supervision split invariants: no box dropped, mask fractions, determinism, growth stability."""

from __future__ import annotations

import math

import pytest

from shapeprop.config import DataConfig, MaskSupervision
from shapeprop.data import DataError, DatasetMetadata
from shapeprop.data.records import BOX_MODE_XYWH_ABS
from shapeprop.data.splits import (
    apply_data_fraction,
    apply_mask_supervision,
    count_masks,
    prepare_training_records,
    split_fingerprint,
)

CLASSES = ["cat", "dog", "bus", "car"]
META = DatasetMetadata("toy", CLASSES, {"animals": ["cat", "dog"], "vehicles": ["bus", "car"]}, "abc")


def make_records(n: int, start: int = 0) -> list[dict]:
    """n images with 1-4 annotations each, one crowd region every 5th image."""
    records = []
    for i in range(start, start + n):
        anns = [
            {"bbox": [1.0, 2.0, 3.0, 4.0], "bbox_mode": BOX_MODE_XYWH_ABS, "category_id": (i + k) % 4,
             "segmentation": [[1, 2, 4, 2, 4, 6]], "iscrowd": int(k == 0 and i % 5 == 0), "has_mask": True}
            for k in range(1 + i % 4)
        ]  # fmt: skip
        records.append(
            {"file_name": f"{i}.png", "height": 10, "width": 10, "image_id": i, "annotations": anns}
        )
    return records


def boxes(records):
    return [(r["image_id"], a["category_id"], tuple(a["bbox"])) for r in records for a in r["annotations"]]


@pytest.mark.parametrize(
    "spec",
    [
        MaskSupervision(kind="all"),
        MaskSupervision(kind="categories", classes="animals"),
        MaskSupervision(kind="categories", classes=["bus"]),
        MaskSupervision(kind="images", image_ids=[1, "2", 3]),
        MaskSupervision(kind="image_fraction", fraction=0.3),
    ],
)
def test_no_box_dropped_and_input_untouched(spec):
    records = make_records(50)
    before = boxes(records)
    out = apply_mask_supervision(records, META, spec, seed=0)
    assert boxes(out) == before
    assert all(a["has_mask"] for r in records for a in r["annotations"])  # input not mutated
    assert 0 < count_masks(out) <= count_masks(records)


def test_category_split_keeps_exactly_the_named_classes():
    out = apply_mask_supervision(
        make_records(40), META, MaskSupervision(kind="categories", classes="animals"), 0
    )
    for ann in (a for r in out for a in r["annotations"]):
        assert ann["has_mask"] == (CLASSES[ann["category_id"]] in ("cat", "dog"))


def test_image_split_keeps_exactly_the_named_images():
    out = apply_mask_supervision(
        make_records(20), META, MaskSupervision(kind="images", image_ids=[4, "7"]), 0
    )
    for record in out:
        assert all(a["has_mask"] == (record["image_id"] in (4, 7)) for a in record["annotations"])


# A hand-made input in which some instances have no mask to begin with: (image id, [(class, has_mask)]).
# Image 3 has none at all.
HAND = {
    1: [("cat", True), ("dog", False), ("bus", True)],
    2: [("car", True), ("cat", False)],
    3: [("dog", False), ("bus", False)],
    4: [("cat", True), ("car", True)],
}
HAND_MASKED = {(1, 0), (1, 2), (2, 0), (4, 0), (4, 1)}


def hand_records(has_mask: bool | None = None) -> list[dict]:
    """`HAND` as records; `has_mask` True or False overrides every instance's flag."""
    return [
        {"file_name": f"{i}.png", "height": 10, "width": 10, "image_id": i,
         "annotations": [
             {"bbox": [1.0, 1.0, 4.0, 4.0], "bbox_mode": BOX_MODE_XYWH_ABS, "category_id": CLASSES.index(c),
              "segmentation": [[1, 1, 5, 1, 5, 5]], "iscrowd": 0, "has_mask": m if has_mask is None else has_mask}
             for c, m in anns
         ]}
        for i, anns in HAND.items()
    ]  # fmt: skip


def masked(records) -> set[tuple[int, int]]:
    return {(r["image_id"], k) for r in records for k, a in enumerate(r["annotations"]) if a["has_mask"]}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (MaskSupervision(kind="all"), HAND_MASKED),
        # The dogs (1, 1) and (3, 0) and the cat (2, 1) have no mask and must not get one.
        (MaskSupervision(kind="categories", classes="animals"), {(1, 0), (4, 0)}),
        (MaskSupervision(kind="categories", classes=["bus"]), {(1, 2)}),  # not the mask-less bus (3, 1)
        (MaskSupervision(kind="images", image_ids=[1, "3"]), {(1, 0), (1, 2)}),  # image 3 stays mask-less
    ],
)
def test_splits_keep_exactly_the_allowed_existing_masks(spec, expected):
    records = hand_records()
    out = apply_mask_supervision(records, META, spec, seed=0)
    assert masked(out) == expected
    assert boxes(out) == boxes(records)
    if spec.kind == "all":
        assert out == records


def test_image_fraction_keeps_the_existing_masks_of_the_chosen_images():
    # Which images are chosen depends only on (seed, image id); read it off the same images with
    # every mask present, then the split of the real input must keep exactly their existing masks.
    for fraction in (0.3, 0.6, 1.0):
        spec = MaskSupervision(kind="image_fraction", fraction=fraction)
        for seed in range(6):
            try:
                chosen = {i for i, _ in masked(apply_mask_supervision(hand_records(True), META, spec, seed))}
            except DataError:  # no image chosen
                chosen = set()
            expected = {(i, k) for i, k in HAND_MASKED if i in chosen}
            if expected:
                out = apply_mask_supervision(hand_records(), META, spec, seed)
                assert masked(out) == expected, (fraction, seed)
            else:
                with pytest.raises(DataError, match="leaves no masks"):
                    apply_mask_supervision(hand_records(), META, spec, seed)
    assert chosen == set(HAND)  # fraction 1 chooses every image


def test_data_fraction_keeps_whole_images_with_their_masks_as_they_were():
    records = hand_records()
    kept = apply_data_fraction(records, 0.5, seed=2)
    ids = [r["image_id"] for r in kept]
    assert 0 < len(ids) < 4 and ids == sorted(ids)  # for seed 2: images 1, 3, 4
    assert kept == [r for r in records if r["image_id"] in ids]  # untouched, mask-less ones included
    assert masked(kept) == {(i, k) for i, k in HAND_MASKED if i in ids}


def test_image_fraction_is_close_seeded_and_per_image():
    records = make_records(2000)
    spec = MaskSupervision(kind="image_fraction", fraction=0.25)
    out = apply_mask_supervision(records, META, spec, seed=1)
    with_masks = {r["image_id"] for r in out if any(a["has_mask"] for a in r["annotations"])}
    assert abs(len(with_masks) / 2000 - 0.25) < 0.04
    for record in out:  # all or nothing per image
        assert len({a["has_mask"] for a in record["annotations"]}) == 1
    again = apply_mask_supervision(records, META, spec, seed=1)
    assert again == out
    other = apply_mask_supervision(records, META, spec, seed=2)
    assert {r["image_id"] for r in other if r["annotations"][0]["has_mask"]} != with_masks


@pytest.mark.parametrize("fraction", [0.1, 0.02, 0.5])
def test_data_fraction_size_determinism_and_growth(fraction):
    records = make_records(3000)
    kept = apply_data_fraction(records, fraction, seed=5)
    # Each image is kept independently (a hash below `fraction`), so the count is binomial:
    # sd = sqrt(3000 f (1 - f)) = 7.7, 16.4 and 27.4 images for f = 0.02, 0.1 and 0.5; allow 4 sd.
    assert abs(len(kept) - 3000 * fraction) < 4 * math.sqrt(3000 * fraction * (1 - fraction))
    assert apply_data_fraction(records, fraction, seed=5) == kept
    assert [r["image_id"] for r in apply_data_fraction(records, fraction, seed=6)] != [
        r["image_id"] for r in kept
    ]
    grown = apply_data_fraction(make_records(500, start=3000) + records[::-1], fraction, seed=5)
    assert {r["image_id"] for r in grown} & set(range(3000)) == {r["image_id"] for r in kept}
    assert boxes(kept) == boxes([r for r in records if r in kept])


def test_mask_decisions_stable_when_dataset_grows():
    spec = MaskSupervision(kind="image_fraction", fraction=0.4)
    small = apply_mask_supervision(make_records(300), META, spec, seed=3)
    big = apply_mask_supervision(make_records(600), META, spec, seed=3)
    assert small == big[:300]


def test_full_fraction_keeps_everything():
    records = make_records(10)
    assert apply_data_fraction(records, 1.0, 0) == records


def test_errors_name_the_problem():
    records = make_records(10)
    with pytest.raises(DataError, match=r"masks.classes.*'zebra'.*classes: cat, dog"):
        apply_mask_supervision(records, META, MaskSupervision(kind="categories", classes=["cat", "zebra"]), 0)
    with pytest.raises(DataError, match="masks.classes.*'voc'.*groups: animals, vehicles"):
        apply_mask_supervision(records, META, MaskSupervision(kind="categories", classes="voc"), 0)
    with pytest.raises(DataError, match="masks.image_ids.*none of the"):
        apply_mask_supervision(records, META, MaskSupervision(kind="images", image_ids=[999]), 0)
    no_masks = [{**r, "annotations": [{**a, "has_mask": False} for a in r["annotations"]]} for r in records]
    with pytest.raises(DataError, match="leaves no masks"):
        apply_mask_supervision(no_masks, META, MaskSupervision(), 0)
    with pytest.raises(DataError, match="data_fraction.*keeps none"):
        apply_data_fraction(records[:2], 0.001, 0)


def test_fingerprint_depends_on_data_spec_and_seed_only():
    base = DataConfig()
    fp = split_fingerprint(META, base)
    assert fp == split_fingerprint(META, DataConfig(root="/elsewhere", num_workers=0, min_size=64))
    assert fp != split_fingerprint(META, DataConfig(split_seed=1))
    assert fp != split_fingerprint(META, DataConfig(data_fraction=0.5))
    assert fp != split_fingerprint(META, DataConfig(masks=MaskSupervision(kind="categories", classes="voc")))
    other = DatasetMetadata("toy", CLASSES, {}, "abd")
    assert fp != split_fingerprint(other, base)


def test_prepare_training_records_on_synthetic(tmp_path):
    cfg = DataConfig(
        root=str(tmp_path),
        options={"num_images": 40, "image_size": 48},
        masks=MaskSupervision(kind="categories", classes="nonvoc"),
        data_fraction=0.5,
        split_seed=2,
    )
    records, metadata, fp = prepare_training_records(cfg)
    assert 8 < len(records) < 32
    nonvoc = set(metadata.class_groups["nonvoc"])
    for ann in (a for r in records for a in r["annotations"]):
        assert ann["has_mask"] == (metadata.classes[ann["category_id"]] in nonvoc)
    assert prepare_training_records(cfg)[2] == fp
