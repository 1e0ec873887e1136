"""Datasets by name: `load("coco_2017", root, split="val")`, and the dataset registry `DATASETS`.

A dataset is a `DatasetEntry`: a loader `loader(root: Path | None, split: str, **options) -> Dataset`
(options are checked against its signature, so a misspelt option fails with the list of known ones),
what it reads (checked before a run starts), its folder under `$SHAPEPROP_DATA`, and its class names
(known without loading, for planning). A root of None means `$SHAPEPROP_DATA/<default dir>` for
real datasets, and a cache dir for generated ones.

A COCO-format dataset of one's own needs no registration: `DataConfig.files` names an annotation file
and an image folder per split (`shapeprop.data.source`), and a suite's `datasets:` section gives it a
name.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shapeprop.data.records import DataError, Dataset, Requirement
from shapeprop.registry import Registry, UnknownName

Loader = Callable[..., Dataset]
Requirements = Callable[..., list[Requirement]]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset.

    `requirements(root, split, **options)` lists the files and folders the loader reads first (None:
    it reads none, e.g. a generated set); `default_dir` is its folder under `$SHAPEPROP_DATA` (None:
    it needs no root); `classes(**options)` its class names without loading it (None: load the
    split and read them)."""

    loader: Loader
    requirements: Requirements | None = None
    default_dir: str | None = None
    classes: Callable[..., list[str]] | None = None


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register(
    name: str,
    loader: Loader,
    requirements: Requirements | None = None,
    *,
    default_dir: str | None = None,
    classes: Callable[..., list[str]] | list[str] | None = None,
    source: str | None = None,
    replace: bool = False,
) -> DatasetEntry:
    """Register `loader` as dataset `name` (see `DatasetEntry`); `classes` may be a fixed list.
    `source` names who registers it (default: the plugin being loaded), for errors."""
    if isinstance(classes, list):
        fixed = list(classes)
        classes = lambda **_: fixed  # noqa: E731
    entry = DatasetEntry(loader, requirements, default_dir, classes)
    return DATASETS.register(name, entry, source=source, replace=replace)


def entry(name: str) -> DatasetEntry:
    try:
        return DATASETS.get(name)
    except UnknownName as err:
        raise DataError(str(err), key="dataset") from None


def loader(name: str) -> Loader:
    """The loader registered under `name`; an unknown name raises DataError listing the known ones."""
    return entry(name).loader


def names() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(DATASETS.names())


def resolve_root(name: str, root: str | Path | None) -> Path | None:
    """`root`, or the dataset's default when None ($SHAPEPROP_DATA/<its folder>; None for a
    dataset that needs no root)."""
    if root is not None:
        return Path(root).expanduser()
    default_dir = entry(name).default_dir
    if default_dir is None:
        return None  # a generated set: the loader picks its cache dir from the options
    base = os.environ.get("SHAPEPROP_DATA")
    if base is None:
        raise DataError(
            f"dataset {name!r} needs a root directory (pass root=..., or set $SHAPEPROP_DATA "
            f"to a directory holding {default_dir}/)",
            key="root",
        )
    return Path(base) / default_dir


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
    find = entry(name).requirements
    if find is None:
        return []
    path = resolve_root(name, root)
    accepted = inspect.signature(find).parameters
    return find(path, split, **{k: v for k, v in options.items() if k in accepted})


def class_names(name: str, root: str | Path | None = None, split: str = "train", **options: Any) -> list[str]:
    """The class names of dataset `name` (category_id = index), without loading it where the entry
    knows them."""
    known = entry(name).classes
    if known is None:
        return load(name, root, split, **options).metadata.classes
    accepted = inspect.signature(known).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    return known(**{k: v for k, v in options.items() if takes_any or k in accepted})


def _register_builtin() -> None:
    from shapeprop.data import bdd100k, coco, synthetic, voc

    register("synthetic", synthetic.load_synthetic, classes=list(synthetic.CLASSES))
    register(
        "coco_2017",
        coco.load_coco_2017,
        coco.coco_2017_requirements,
        default_dir="coco",
        classes=coco.COCO_2017_CLASSES,
    )
    register(
        "voc_2012",
        voc.load_voc_2012,
        voc.voc_2012_requirements,
        default_dir="VOCdevkit/VOC2012",
        classes=voc.VOC_CLASSES,
    )
    # the fused set keeps the ins_seg label set
    for name, load_fn, needs, classes in (
        (
            "bdd100k_ins_seg",
            bdd100k.load_bdd100k_ins_seg,
            bdd100k.ins_seg_requirements,
            bdd100k.INS_SEG_CLASSES,
        ),
        ("bdd100k_det", bdd100k.load_bdd100k_det, bdd100k.det_requirements, bdd100k.DET_CLASSES),
        ("bdd100k_fused", bdd100k.load_bdd100k_fused, bdd100k.fused_requirements, bdd100k.INS_SEG_CLASSES),
    ):
        register(name, load_fn, needs, default_dir="bdd100k", classes=classes)


_register_builtin()
