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

from shapeprop.data.records import DataError, Dataset

Loader = Callable[..., Dataset]

_LOADERS: dict[str, Loader] = {}
# where each real dataset lives under $SHAPEPROP_DATA when no root is given
_DEFAULT_DIRS = {
    "coco_2017": "coco",
    "voc_2012": "VOCdevkit/VOC2012",
    "bdd100k_ins_seg": "bdd100k",
    "bdd100k_det": "bdd100k",
    "bdd100k_fused": "bdd100k",
}


def register(name: str, loader: Loader) -> None:
    """Register `loader` under `name` (replacing an earlier one of that name)."""
    _LOADERS[name] = loader


def loader(name: str) -> Loader:
    """The loader registered under `name`; an unknown name raises DataError listing the known ones."""
    if name not in _LOADERS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(names())}", key="dataset")
    return _LOADERS[name]


def names() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_LOADERS)


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
    path = Path(root).expanduser() if root is not None else _default_root(name)
    return load_fn(root=path, split=split, **options)


def _register_builtin() -> None:
    from shapeprop.data import bdd100k, coco, synthetic, voc

    register("synthetic", synthetic.load_synthetic)
    register("coco_2017", coco.load_coco_2017)
    register("voc_2012", voc.load_voc_2012)
    register("bdd100k_ins_seg", bdd100k.load_bdd100k_ins_seg)
    register("bdd100k_det", bdd100k.load_bdd100k_det)
    register("bdd100k_fused", bdd100k.load_bdd100k_fused)


_register_builtin()
