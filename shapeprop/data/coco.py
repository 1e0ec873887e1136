"""COCO-format instance annotations (COCO 2017 itself, and the synthetic set cached in the same format).

Category ids are remapped to contiguous 0-based ids in ascending order of the file's ids; the
names are kept in the metadata. Polygons and RLE (compressed or not) are kept as they are; crowd
regions stay in the records with `iscrowd=1` (evaluation ignores matches to them, training leaves
them out).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from shapeprop.data.records import (
    BOX_MODE_XYWH_ABS,
    DataError,
    Dataset,
    DatasetMetadata,
    Requirement,
    check_images_exist,
    hash_files,
    read_json,
    require_dir,
)

# The 20 PASCAL VOC classes under their COCO names (VOC: aeroplane, diningtable, motorbike,
# pottedplant, sofa, tvmonitor); the other 60 COCO classes form the "nonvoc" group.
COCO_VOC_CLASSES = [
    "airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dining table", "dog", "horse", "motorcycle", "person", "potted plant", "sheep", "couch",
    "train", "tv",
]  # fmt: skip


# COCO 2017's 80 instance categories in the order of their ids (the names its annotation files give),
# so that the class count is known without the files (a suite is planned before any data is read).
COCO_2017_CLASSES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip


def _segmentation(ann: dict[str, Any]) -> Any:
    """The annotation's segmentation, or None when it carries no usable mask."""
    segm = ann.get("segmentation")
    if isinstance(segm, list):
        polygons = [[float(v) for v in p] for p in segm if isinstance(p, list) and len(p) >= 6]
        return polygons or None
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        return segm
    return None


def _require(obj: dict[str, Any], keys: tuple[str, ...], path: Path, where: str) -> None:
    if not isinstance(obj, dict):
        raise DataError(f"expected an object, got {type(obj).__name__}", path, where)
    for key in keys:
        if key not in obj:
            raise DataError("missing key", path, f"{where}.{key}")


def parse_coco(
    data: dict[str, Any], json_path: Path, image_dir: Path
) -> tuple[list[dict[str, Any]], list[str]]:
    """COCO instances JSON (already parsed) -> (records, class names). Errors name the key at fault."""
    if not isinstance(data, dict):
        raise DataError(f"expected a JSON object at top level, got {type(data).__name__}", json_path)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError("missing or not a list", json_path, key)
    for i, cat in enumerate(data["categories"]):
        _require(cat, ("id", "name"), json_path, f"categories[{i}]")
    categories = sorted(data["categories"], key=lambda c: c["id"])
    contiguous = {c["id"]: i for i, c in enumerate(categories)}
    classes = [str(c["name"]) for c in categories]

    records: dict[Any, dict[str, Any]] = {}
    for i, img in enumerate(data["images"]):
        _require(img, ("id", "file_name", "height", "width"), json_path, f"images[{i}]")
        if img["id"] in records:
            raise DataError(f"duplicate image id {img['id']!r}", json_path, f"images[{i}].id")
        records[img["id"]] = {
            "file_name": str(image_dir / img["file_name"]),
            "height": int(img["height"]),
            "width": int(img["width"]),
            "image_id": img["id"],
            "annotations": [],
        }
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        _require(ann, ("image_id", "bbox", "category_id"), json_path, where)
        if ann["image_id"] not in records:
            raise DataError(f"unknown image id {ann['image_id']!r}", json_path, f"{where}.image_id")
        if ann["category_id"] not in contiguous:
            raise DataError(f"unknown category id {ann['category_id']!r}", json_path, f"{where}.category_id")
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            raise DataError(f"expected [x, y, w, h] numbers, got {bbox!r}", json_path, f"{where}.bbox")
        segm = _segmentation(ann)
        by_image[ann["image_id"]].append(
            {
                "id": ann.get("id"),
                "bbox": [float(v) for v in bbox],
                "bbox_mode": BOX_MODE_XYWH_ABS,
                "category_id": contiguous[ann["category_id"]],
                "segmentation": segm,
                "iscrowd": int(ann.get("iscrowd", 0)),
                "has_mask": segm is not None,
            }
        )
    for image_id, anns in by_image.items():
        records[image_id]["annotations"] = anns
    return list(records.values()), classes


def coco_categories(json_path: Path) -> list[str]:
    """The class names of a COCO instances file (its categories in ascending id order), as
    `parse_coco` numbers them (category_id = index)."""
    data = read_json(json_path)
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list):
        raise DataError("missing or not a list", json_path, "categories")
    for i, cat in enumerate(data["categories"]):
        _require(cat, ("id", "name"), json_path, f"categories[{i}]")
    return [str(c["name"]) for c in sorted(data["categories"], key=lambda c: c["id"])]


def load_coco_json(
    json_path: Path,
    image_dir: Path,
    name: str,
    split: str,
    class_groups: dict[str, list[str]] | None = None,
    check_images: bool = True,
) -> Dataset:
    """Load one COCO instances JSON whose `file_name`s are relative to `image_dir`."""
    records, classes = parse_coco(read_json(json_path), json_path, image_dir)
    if check_images:
        check_images_exist(records, str(json_path))
    metadata = DatasetMetadata(
        name=name,
        classes=classes,
        class_groups=class_groups or {},
        fingerprint=hash_files([json_path]),
        root=image_dir.parent,
        split=split,
    )
    return Dataset(records, metadata)


def coco_class_groups(classes: list[str]) -> dict[str, list[str]]:
    """COCO's VOC-20 / non-VOC-60 groups, restricted to the classes present in the file."""
    voc = [c for c in classes if c in COCO_VOC_CLASSES]
    return {"voc": voc, "nonvoc": [c for c in classes if c not in COCO_VOC_CLASSES]}


def coco_2017_requirements(root: Path, split: str = "train") -> list[Requirement]:
    """What `load_coco_2017` reads: the instances JSON and the image folder of `split`."""
    return [
        Requirement("annotation file", (root / "annotations" / f"instances_{split}2017.json",)),
        Requirement("image folder", (root / f"{split}2017",)),
    ]


def load_coco_2017(root: Path, split: str = "train", check_images: bool = True) -> Dataset:
    """COCO 2017 instances: `<root>/annotations/instances_{split}2017.json`, images in `<root>/{split}2017/`.

    `split` is `train` or `val` (`train2017` / `val2017` are accepted too).
    """
    require_dir(root, "COCO root")
    split = split.removesuffix("2017")
    json_path = root / "annotations" / f"instances_{split}2017.json"
    dataset = load_coco_json(json_path, root / f"{split}2017", "coco_2017", split, check_images=check_images)
    dataset.metadata.root = root
    dataset.metadata.class_groups = coco_class_groups(dataset.metadata.classes)
    return dataset
