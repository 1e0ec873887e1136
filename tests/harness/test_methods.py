"""Methods: each resolves and patches the config; `more_head_params` widens the mask head to
ShapeProp's count."""

from __future__ import annotations

from harness import methods
from harness.suite import expand, load_suite
from shapeprop.config import ExperimentConfig
from tests.helpers.suites import write


def test_every_method_resolves_and_patches_the_config():
    for name in methods.names():
        if name == "more_head_params":
            continue  # needs the detector library (tested below)
        cfg = ExperimentConfig(data={"masks": {"kind": "categories", "classes": "voc"}}).model_dump(
            mode="json"
        )
        patched = ExperimentConfig.model_validate(_apply(cfg, methods.get(name).patch(cfg)))
        assert patched.model.arch == ("retinamask" if name.startswith("retinamask") else "mask_rcnn")
        assert (patched.model.shapeprop is not None) == ("shapeprop" in name), name
        pseudo = {"box_masks": "box", "grabcut": "grabcut", "progressive": "progressive"}
        assert patched.model.pseudo_masks == pseudo.get(name, "none")
        assert patched.model.mask_transfer == (name == "maskx")
        assert patched.data.masks.kind == ("all" if name == "oracle" else "categories")


def _apply(cfg: dict, patch: dict) -> dict:
    for dotted, value in patch.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return cfg


def test_more_head_params_widens_the_mask_head_to_shapeprops_count(tmp_path):
    from shapeprop.config import ModelConfig, ShapePropConfig
    from shapeprop.data.synthetic import CLASSES
    from shapeprop.models.params import widened_mask_head_channels
    from shapeprop.models.recipes import recipe

    path = write(
        tmp_path,
        """
        name: heads
        base: {model: {backbone: resnet50, class_agnostic_masks: true}, data: {dataset: coco_2017}}
        rows: [{label: base, method: mask_rcnn}, {label: wide, method: more_head_params}]
        profiles:
          mini: {datasets: {coco_2017: synthetic}, overrides: {model.backbone: tiny}}
        """,
    )
    base, wide = expand(load_suite(path), "mini")
    assert base.config.model.mask_head_channels is None
    # the width is computed after the profile: for the tiny backbone and the synthetic classes
    tiny = ModelConfig(backbone="tiny", class_agnostic_masks=True, shapeprop=ShapePropConfig())
    assert wide.config.model.mask_head_channels == widened_mask_head_channels(tiny, len(CLASSES))
    assert wide.config.model.mask_head_channels > recipe("tiny").mask_head_channels
    assert wide.config.model.shapeprop is None


def test_more_head_params_matches_the_shapeprop_head_of_the_base(tmp_path):
    from shapeprop.config import ModelConfig, ShapePropConfig
    from shapeprop.data.synthetic import CLASSES
    from shapeprop.models.params import widened_mask_head_channels

    path = write(
        tmp_path,
        """
        name: heads
        base: {model: {backbone: tiny, shapeprop: {latent_channels: 8}}, data: {dataset: synthetic}}
        rows: [{label: wide, method: more_head_params}]
        """,
    )
    (wide,) = expand(load_suite(path))
    head = ModelConfig(backbone="tiny", shapeprop=ShapePropConfig(latent_channels=8))
    assert wide.config.model.mask_head_channels == widened_mask_head_channels(head, len(CLASSES))
    default = widened_mask_head_channels(
        head.model_copy(update={"shapeprop": ShapePropConfig()}), len(CLASSES)
    )
    assert wide.config.model.mask_head_channels != default  # the base's head, not the default one
