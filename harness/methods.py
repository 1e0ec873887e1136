"""Methods: named presets that patch a config into one of the paper's models or baselines.

A suite row names a method; expansion applies it after the base config and before the row's
overrides (`harness.suite.expand`). A method sets only the keys that define it, so a base or
row can still choose the backbone, the dataset or the split. `patch` runs with the config as
resolved so far; `finalize` runs once everything else (profile included) has been applied, for
values that depend on the final backbone or dataset; it also receives the ShapeProp settings the
suite's base and profile give a ShapeProp row (a partial `ShapePropConfig` dict), so a control
can match the head the suite actually uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shapeprop.config import ShapePropConfig
from shapeprop.registry import Registry

Patch = dict[str, Any]  # dotted config key -> value


def _no_finalize(cfg: dict[str, Any], shapeprop: dict[str, Any]) -> Patch:
    return {}


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    patch: Callable[[dict[str, Any]], Patch]
    finalize: Callable[[dict[str, Any], dict[str, Any]], Patch] = field(default=_no_finalize)


_PLAIN = {"model.shapeprop": None, "model.pseudo_masks": "none", "model.mask_transfer": False}


def _with_shapeprop(channel_agnostic: bool) -> Callable[[dict[str, Any]], Patch]:
    def patch(cfg: dict[str, Any]) -> Patch:
        # Keep the ShapeProp settings the base already chose; the preset fills the rest at validation.
        current = cfg["model"].get("shapeprop") or {}
        return {
            "model.shapeprop": current,
            "model.shapeprop.channel_agnostic": channel_agnostic,
            "model.pseudo_masks": "none",
            "model.mask_transfer": False,
        }

    return patch


def _fixed(arch: str, **extra: Any) -> Callable[[dict[str, Any]], Patch]:
    def patch(cfg: dict[str, Any]) -> Patch:
        return {"model.arch": arch, **_PLAIN, **extra}

    return patch


def _arch(arch: str, inner: Callable[[dict[str, Any]], Patch]) -> Callable[[dict[str, Any]], Patch]:
    def patch(cfg: dict[str, Any]) -> Patch:
        return {"model.arch": arch, **inner(cfg)}

    return patch


def matched_mask_head_channels(cfg: dict[str, Any], shapeprop: dict[str, Any]) -> int:
    """Table 4 "more head params": the mask-head width whose parameters match the default mask head
    plus the ShapeProp head `shapeprop` on the same backbone and dataset (the library counts)."""
    from shapeprop.config import DataConfig, ModelConfig
    from shapeprop.data import source
    from shapeprop.models.params import widened_mask_head_channels  # closed form: no torch

    model = ModelConfig.model_validate(cfg["model"])
    head = ShapePropConfig.model_validate(shapeprop)
    with_shapeprop = model.model_copy(update={"shapeprop": head, "mask_head_channels": None})
    classes = source.data_class_names(DataConfig.model_validate(cfg.get("data", {})))
    return int(widened_mask_head_channels(with_shapeprop, len(classes)))


def _more_head_params_finalize(cfg: dict[str, Any], shapeprop: dict[str, Any]) -> Patch:
    if cfg["model"].get("mask_head_channels") is not None:  # a row chose the width itself
        return {}
    return {"model.mask_head_channels": matched_mask_head_channels(cfg, shapeprop)}


METHODS: Registry[Method] = Registry("method")
for _method in (
    Method("mask_rcnn", "Mask R-CNN baseline (masks where the split has them)", _fixed("mask_rcnn")),
    Method(
        "shapeprop",
        "Mask R-CNN w/ ShapeProp (per-channel propagation kernels)",
        _arch("mask_rcnn", _with_shapeprop(channel_agnostic=False)),
    ),
    Method(
        "shapeprop_channel_agnostic",
        "Mask R-CNN w/ ShapeProp, one propagation kernel shared by all channels (Table 4)",
        _arch("mask_rcnn", _with_shapeprop(channel_agnostic=True)),
    ),
    Method(
        "more_head_params",
        "Mask R-CNN with a mask head widened to ShapeProp's parameter count (Table 4)",
        _fixed("mask_rcnn"),
        _more_head_params_finalize,
    ),
    Method(
        "box_masks",
        "Mask R-CNN trained on filled boxes as the masks of box-only instances (the floor)",
        _fixed("mask_rcnn", **{"model.pseudo_masks": "box"}),
    ),
    Method(
        "grabcut",
        "Mask R-CNN trained on GrabCut pseudo masks for box-only instances",
        _fixed("mask_rcnn", **{"model.pseudo_masks": "grabcut"}),
    ),
    Method(
        "progressive",
        "Progressive Mask R-CNN: pseudo-label box-only instances with a first model, retrain",
        _fixed("mask_rcnn", **{"model.pseudo_masks": "progressive"}),
    ),
    Method(
        "maskx",
        "Mask^X R-CNN: weight transfer from the box head to the mask head",
        _fixed("mask_rcnn", **{"model.mask_transfer": True}),
    ),
    Method(
        "oracle",
        "Mask R-CNN fully supervised: masks of every instance (the upper bound)",
        _fixed("mask_rcnn", **{"data.masks": {"kind": "all"}}),
    ),
    Method("retinamask", "RetinaMask baseline (single stage)", _fixed("retinamask")),
    Method(
        "retinamask_shapeprop",
        "RetinaMask w/ ShapeProp",
        _arch("retinamask", _with_shapeprop(channel_agnostic=False)),
    ),
):
    METHODS.register(_method.name, _method)


def names() -> list[str]:
    """Every registered method name, in registry order."""
    return METHODS.names()


def get(name: str) -> Method:
    """The method called `name`; `UnknownName` (a `KeyError`) with the closest name for a misspelling."""
    return METHODS.get(name)


def register(method: Method) -> None:
    """Add a method (e.g. from a plugin, which is recorded as its source); a name that exists
    already is an error naming who registered it."""
    METHODS.register(method.name, method)
