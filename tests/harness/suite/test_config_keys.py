"""`--set` keys checked against the config schema: the fix for a bad key, no guess for an ambiguous one."""

from __future__ import annotations

import pytest

from harness.suite import SuiteError, parse_overrides


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        # a misspelt section: the suggestion is for the part that is wrong
        ("modl.backbone=tiny", "unknown config key 'modl.backbone' (did you mean 'model'?)"),
        # a key given without its section: the one full key that ends with it
        ("backbone=tiny", "unknown config key 'backbone' (did you mean 'model.backbone'?)"),
        (
            "latent_channels=8",
            "unknown config key 'latent_channels' (did you mean 'model.shapeprop.latent_channels'?)",
        ),
        # a key below a plain value
        (
            "data.dataset.name=coco",
            "'data.dataset' is a value, not a section: cannot set 'data.dataset.name'",
        ),
        ("seed.offset=1", "'seed' is a value, not a section: cannot set 'seed.offset'"),
    ],
)
def test_set_names_a_bad_key_and_the_fix(item, expected):
    with pytest.raises(SuiteError) as info:
        parse_overrides([item])
    assert f"--set {item!r}: {expected}" in str(info.value)


def test_set_of_an_ambiguous_key_guesses_nothing():
    # two full keys end with it (model.mask_head_channels, model.sizes.mask_head_channels): no guess
    with pytest.raises(SuiteError) as info:
        parse_overrides(["mask_head_channels=8"])
    assert "unknown config key 'mask_head_channels'" in str(info.value)
    assert "did you mean" not in str(info.value)
