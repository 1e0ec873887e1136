"""The dataset a `DataConfig` describes: a COCO-format dataset given by its files (`data.files`),
or a registered one (`shapeprop.data.catalog`) with its root and options. Everything that reads a
run's data goes through here: training, evaluation, preflight, `data verify`, the harness's class
counts."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path

from shapeprop.config import DataConfig, SplitFiles
from shapeprop.data.catalog import DatasetEntry, class_names, entry, load, loader, requirements
from shapeprop.data.records import DataError, Dataset, Requirement


def files_entry(
    name: str, files: Mapping[str, SplitFiles], class_groups: Mapping[str, list[str]] | None = None
) -> DatasetEntry:
    """A COCO-format dataset given by an annotation file and an image folder per split."""
    from shapeprop.data.coco import coco_categories, load_coco_json

    def split_files(split: str) -> SplitFiles:
        if split not in files:
            raise DataError(
                f"no files for split {split!r}; splits: {', '.join(files)}", key=f"data.files.{split}"
            )
        return files[split]

    def load_split(root: Path | None, split: str, check_images: bool = True) -> Dataset:
        f = split_files(split)
        groups = {g: list(members) for g, members in (class_groups or {}).items()}
        dataset = load_coco_json(Path(f.annotations), Path(f.images), name, split, groups, check_images)
        unknown = sorted({c for members in groups.values() for c in members} - set(dataset.metadata.classes))
        if unknown:
            raise DataError(
                f"class group member(s) {', '.join(map(repr, unknown))} are not categories of the file "
                f"(categories: {', '.join(dataset.metadata.classes)})",
                f.annotations,
                "data.class_groups",
            )
        return dataset

    def needs(root: Path | None, split: str) -> list[Requirement]:
        f = split_files(split)
        return [
            Requirement("annotation file", (Path(f.annotations),)),
            Requirement("image folder", (Path(f.images),)),
        ]

    def classes() -> list[str]:
        return coco_categories(Path(next(iter(files.values())).annotations))

    return DatasetEntry(load_split, needs, None, classes)


def data_entry(data: DataConfig) -> DatasetEntry:
    """The dataset a data config names: its own files, else the registered entry."""
    return files_entry(data.dataset, data.files, data.class_groups) if data.files else entry(data.dataset)


def load_data(data: DataConfig, split: str, check_images: bool = True) -> Dataset:
    """Split `split` of the dataset `data` describes (its files, or a registered name, root and
    options). `check_images=False` skips the check that every image file exists, where the loader
    makes one (`shapeprop.data.verify` lists missing images itself)."""
    if data.files:
        return data_entry(data).loader(None, split, check_images=check_images)
    options = dict(data.options)
    if not check_images and "check_images" in inspect.signature(loader(data.dataset)).parameters:
        options["check_images"] = False
    return load(data.dataset, data.root, split, **options)


def data_requirements(data: DataConfig, split: str) -> list[Requirement]:
    """What `load_data(data, split)` reads first (see `requirements`)."""
    if data.files:
        return data_entry(data).requirements(None, split)  # type: ignore[misc]
    return requirements(data.dataset, data.root, split, **data.options)


def data_class_names(data: DataConfig) -> list[str]:
    """The class names of the dataset `data` describes, without loading it where possible."""
    if data.files:
        return data_entry(data).classes()  # type: ignore[misc]
    return class_names(data.dataset, data.root, data.train_split, **data.options)
