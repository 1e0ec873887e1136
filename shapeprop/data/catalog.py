"""Datasets by name: `load("coco_2017", root, split="val")`.

A loader is a callable `loader(root: Path | None, split: str, **options) -> Dataset`; options are
checked against its signature, so a misspelt option fails with the list of known ones. A root of
None means `$SHAPEPROP_DATA/<default dir>` for real datasets, and a cache dir for `synthetic`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shapeprop.data.records import DataError, Dataset, Requirement

Loader = Callable[..., Dataset]


Requirements = Callable[..., list[Requirement]]

_LOADERS: dict[str, Loader] = {}
_REQUIREMENTS: dict[str, Requirements] = {}
# where each real dataset lives under $SHAPEPROP_DATA when no root is given
_DEFAULT_DIRS = {
    "coco_2017": "coco",
    "voc_2012": "VOCdevkit/VOC2012",
    "bdd100k_ins_seg": "bdd100k",
    "bdd100k_det": "bdd100k",
    "bdd100k_fused": "bdd100k",
}


def register(name: str, loader: Loader, requirements: Requirements | None = None) -> None:
    """Register `loader` under `name` (replacing an earlier one of that name); `requirements(root,
    split, **options)` lists the files and folders it reads first (None: it needs none, e.g. a
    generated set)."""
    _LOADERS[name] = loader
    _REQUIREMENTS.pop(name, None)
    if requirements is not None:
        _REQUIREMENTS[name] = requirements


def loader(name: str) -> Loader:
    """The loader registered under `name`; an unknown name raises DataError listing the known ones."""
    if name not in _LOADERS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(names())}", key="dataset")
    return _LOADERS[name]


def names() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_LOADERS)


def resolve_root(name: str, root: str | Path | None) -> Path | None:
    """`root`, or the dataset's default when None ($SHAPEPROP_DATA/<its folder>; None for synthetic)."""
    return Path(root).expanduser() if root is not None else _default_root(name)


def _default_root(name: str) -> Path | None:
    if name == "synthetic":
        return None  # the loader picks its cache dir from the options
    base = os.environ.get("SHAPEPROP_DATA")
    if base is None:
        raise DataError(
            f"dataset {name!r} needs a root directory (pass root=..., or set $SHAPEPROP_DATA "
            f"to a directory holding {_DEFAULT_DIRS.get(name, name)}/)",
            key="root",
        )
    return Path(base) / _DEFAULT_DIRS.get(name, name)


def load(name: str, root: str | Path | None = None, split: str = "train", **options: Any) -> Dataset:
    """Load dataset `name` (see `names()`) from `root` for `split`, with loader-specific options."""
    load_fn = loader(name)
    params = inspect.signature(load_fn).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    known = [p for p in params if p not in ("root", "split")]
    unknown = [k for k in options if k not in known]
    if unknown and not accepts_any:
        raise DataError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for dataset {name!r}; known: {', '.join(known)}",
            key="options",
        )
    return load_fn(root=resolve_root(name, root), split=split, **options)


def requirements(
    name: str, root: str | Path | None = None, split: str = "train", **options: Any
) -> list[Requirement]:
    """The files and folders `load(name, root, split, **options)` would read first, found without
    loading anything (a check before a run starts). Raises DataError for an unknown dataset or a
    missing default root ($SHAPEPROP_DATA unset)."""
    loader(name)
    find = _REQUIREMENTS.get(name)
    if find is None:
        return []
    path = resolve_root(name, root)
    accepted = inspect.signature(find).parameters
    return find(path, split, **{k: v for k, v in options.items() if k in accepted})


def _register_builtin() -> None:
    from shapeprop.data import bdd100k, coco, synthetic, voc

    register("synthetic", synthetic.load_synthetic)
    register("coco_2017", coco.load_coco_2017, coco.coco_2017_requirements)
    register("voc_2012", voc.load_voc_2012, voc.voc_2012_requirements)
    register("bdd100k_ins_seg", bdd100k.load_bdd100k_ins_seg, bdd100k.ins_seg_requirements)
    register("bdd100k_det", bdd100k.load_bdd100k_det, bdd100k.det_requirements)
    register("bdd100k_fused", bdd100k.load_bdd100k_fused, bdd100k.fused_requirements)


_register_builtin()
