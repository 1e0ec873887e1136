"""Counts of a dataset under a split: images, boxes, boxes with masks, per class."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from shapeprop.data.records import DatasetMetadata


@dataclass
class ClassCounts:
    boxes: int = 0
    masks: int = 0
    crowd: int = 0


@dataclass
class DatasetStats:
    images: int = 0
    images_with_masks: int = 0
    boxes: int = 0  # non-crowd
    masks: int = 0  # non-crowd boxes whose has_mask is True
    crowd: int = 0
    per_class: dict[str, ClassCounts] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def dataset_stats(records: list[dict[str, Any]], metadata: DatasetMetadata) -> DatasetStats:
    """Count images, boxes, masks and crowd regions, overall and per class (every class listed)."""
    stats = DatasetStats(images=len(records), per_class={name: ClassCounts() for name in metadata.classes})
    for record in records:
        with_mask = False
        for ann in record["annotations"]:
            counts = stats.per_class[metadata.classes[ann["category_id"]]]
            if ann.get("iscrowd"):
                stats.crowd += 1
                counts.crowd += 1
                continue
            stats.boxes += 1
            counts.boxes += 1
            if ann["has_mask"]:
                stats.masks += 1
                counts.masks += 1
                with_mask = True
        stats.images_with_masks += with_mask
    return stats
