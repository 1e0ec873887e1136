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

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shapeprop.config import ShapePropConfig

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


def num_classes(dataset: str) -> int:
    """Foreground classes of a catalog dataset, without loading it (from the loaders' class lists)."""
    from shapeprop.data import bdd100k, synthetic, voc

    counts = {
        "synthetic": len(synthetic.CLASSES),
        "voc_2012": len(voc.VOC_CLASSES),
        "coco_2017": 80,  # the instances annotations' categories
        "bdd100k_ins_seg": len(bdd100k.INS_SEG_CLASSES),
        "bdd100k_fused": len(bdd100k.INS_SEG_CLASSES),  # the fused set keeps the ins_seg label set
        "bdd100k_det": len(bdd100k.DET_CLASSES),
    }
    if dataset not in counts:
        raise ValueError(
            f"method 'more_head_params': the number of classes of dataset '{dataset}' is not known here; "
            "set model.mask_head_channels in the row"
        )
    return counts[dataset]


def matched_mask_head_channels(cfg: dict[str, Any], shapeprop: dict[str, Any]) -> int:
    """Table 4 "more head params": the mask-head width whose parameters match the default mask head
    plus the ShapeProp head `shapeprop` on the same backbone and dataset (the library counts)."""
    from shapeprop.config import ModelConfig
    from shapeprop.models.params import widened_mask_head_channels  # closed form: no torch

    model = ModelConfig.model_validate(cfg["model"])
    head = ShapePropConfig.model_validate(shapeprop)
    with_shapeprop = model.model_copy(update={"shapeprop": head, "mask_head_channels": None})
    return int(widened_mask_head_channels(with_shapeprop, num_classes(cfg["data"]["dataset"])))


def _more_head_params_finalize(cfg: dict[str, Any], shapeprop: dict[str, Any]) -> Patch:
    if cfg["model"].get("mask_head_channels") is not None:  # a row chose the width itself
        return {}
    return {"model.mask_head_channels": matched_mask_head_channels(cfg, shapeprop)}


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
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
    )
}


def names() -> list[str]:
    """Every registered method name, in registry order."""
    return list(METHODS)


def get(name: str) -> Method:
    """The method called `name`; a `KeyError` with the closest name for a misspelling."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), METHODS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise KeyError(f"unknown method '{name}'{hint}; known: {', '.join(METHODS)}") from None


def register(method: Method) -> None:
    """Add a method (e.g. from a plugin); a name that exists already is an error."""
    if method.name in METHODS:
        raise ValueError(f"method '{method.name}' is already registered")
    METHODS[method.name] = method
