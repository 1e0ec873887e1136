"""Semi-supervision splits, applied to loaded records as data (never as a model code path).

Splits never drop a box: `apply_mask_supervision` only clears `has_mask`, and `apply_data_fraction`
keeps or drops whole images. Every seeded decision is made per image by hashing (salt, seed,
image_id), never by shuffling a list, so an image keeps its decision when the dataset grows.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from shapeprop.config import DataConfig, MaskSupervision
from shapeprop.data.records import DataError, DatasetMetadata


def image_uniform(image_id: Any, seed: int, salt: str) -> float:
    """A number in [0, 1) that depends only on (salt, seed, image_id)."""
    key = f"{salt}\0{seed}\0{type(image_id).__name__}:{image_id}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64


def _copy(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # annotations are copied one level deep; segmentations are shared (they are never mutated)
    return [{**r, "annotations": [copy.copy(a) for a in r["annotations"]]} for r in records]


def resolve_classes(classes: list[str] | str | None, metadata: DatasetMetadata) -> list[str]:
    """A class list or group name (e.g. 'voc') -> class names; unknown names raise DataError."""
    if classes is None:
        raise DataError("kind=categories needs `classes` (names or a group)", key="masks.classes")
    if isinstance(classes, str):
        if classes in metadata.class_groups:
            return list(metadata.class_groups[classes])
        classes = [classes]
    unknown = [c for c in classes if c not in metadata.classes]
    if unknown:
        groups = f"; groups: {', '.join(sorted(metadata.class_groups))}" if metadata.class_groups else ""
        raise DataError(
            f"unknown class name(s) {', '.join(map(repr, unknown))} for dataset {metadata.name!r}; "
            f"classes: {', '.join(metadata.classes)}{groups}",
            key="masks.classes",
        )
    return list(classes)


def count_masks(records: list[dict[str, Any]]) -> int:
    """Non-crowd annotations that keep their mask."""
    return sum(1 for r in records for a in r["annotations"] if a["has_mask"] and not a.get("iscrowd"))


def apply_mask_supervision(
    records: list[dict[str, Any]], metadata: DatasetMetadata, spec: MaskSupervision, seed: int
) -> list[dict[str, Any]]:
    """New records whose annotations keep `has_mask` only where `spec` allows it.

    kind=all keeps every mask; categories keeps masks of the named classes (or class group);
    images keeps masks of the listed image ids (compared as strings, so 7 matches "7");
    image_fraction keeps masks of a seeded fraction of images. A mask the dataset does not have
    is never created. Raises DataError for unknown classes and for a split that leaves no mask.
    """
    out = _copy(records)
    if spec.kind == "all":
        keep = None
    elif spec.kind == "categories":
        wanted = set(resolve_classes(spec.classes, metadata))
        ids = {i for i, name in enumerate(metadata.classes) if name in wanted}
        for record in out:
            for ann in record["annotations"]:
                ann["has_mask"] = ann["has_mask"] and ann["category_id"] in ids
        keep = None
    elif spec.kind == "images":
        if not spec.image_ids:
            raise DataError("kind=images needs a non-empty `image_ids` list", key="masks.image_ids")
        wanted_ids = {str(i) for i in spec.image_ids}
        keep = {id(r) for r in out if str(r["image_id"]) in wanted_ids}
        if not keep:
            raise DataError(
                f"none of the {len(wanted_ids)} image ids (e.g. {sorted(wanted_ids)[:3]}) is in dataset "
                f"{metadata.name!r} ({metadata.split})",
                key="masks.image_ids",
            )
    elif spec.kind == "image_fraction":
        if spec.fraction is None:
            raise DataError("kind=image_fraction needs `fraction`", key="masks.fraction")
        keep = {id(r) for r in out if image_uniform(r["image_id"], seed, "masks") < spec.fraction}
    else:  # pragma: no cover - pydantic restricts `kind`
        raise DataError(f"unknown kind {spec.kind!r}", key="masks.kind")
    if keep is not None:
        for record in out:
            if id(record) not in keep:
                for ann in record["annotations"]:
                    ann["has_mask"] = False
    if count_masks(out) == 0:
        raise DataError(
            f"mask supervision {spec.model_dump(exclude_none=True)} (seed {seed}) leaves no masks in "
            f"dataset {metadata.name!r} ({metadata.split}, {len(records)} images, "
            f"{count_masks(records)} masks before the split)",
            key="masks",
        )
    return out


def apply_data_fraction(records: list[dict[str, Any]], fraction: float, seed: int) -> list[dict[str, Any]]:
    """The images whose seeded hash falls below `fraction` (all of them for fraction 1).

    Raises DataError if no image is kept.
    """
    if not 0 < fraction <= 1:
        raise DataError(f"must be in (0, 1], got {fraction}", key="data_fraction")
    if fraction == 1:
        return list(records)
    kept = [r for r in records if image_uniform(r["image_id"], seed, "data_fraction") < fraction]
    if not kept and records:
        raise DataError(
            f"data fraction {fraction} (seed {seed}) keeps none of the {len(records)} images",
            key="data_fraction",
        )
    return kept


def split_fingerprint(metadata: DatasetMetadata, data_cfg: DataConfig) -> str:
    """sha256 of (annotation fingerprint, split name, mask spec, data fraction, split seed)."""
    spec = {
        "dataset": metadata.name,
        "annotations": metadata.fingerprint,
        "split": data_cfg.train_split,
        "masks": data_cfg.masks.model_dump(mode="json"),
        "data_fraction": data_cfg.data_fraction,
        "split_seed": data_cfg.split_seed,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def prepare_training_records(
    data_cfg: DataConfig,
) -> tuple[list[dict[str, Any]], DatasetMetadata, str]:
    """Load the training split, apply the data fraction, then mask supervision (seed `split_seed`).

    Returns (records, metadata, split fingerprint).
    """
    from shapeprop.data import source

    dataset = source.load_data(data_cfg, data_cfg.train_split)
    records = apply_data_fraction(dataset.records, data_cfg.data_fraction, data_cfg.split_seed)
    records = apply_mask_supervision(records, dataset.metadata, data_cfg.masks, data_cfg.split_seed)
    return records, dataset.metadata, split_fingerprint(dataset.metadata, data_cfg)
