"""PASCAL VOC 2012 instance segmentation.

Layout (`root` = `VOCdevkit/VOC2012`, or `VOCdevkit` holding it): `ImageSets/Segmentation/{split}.txt`
lists the image ids; `JPEGImages/{id}.jpg`; `Annotations/{id}.xml` gives the objects (class name,
box, `difficult`); `SegmentationObject/{id}.png` and `SegmentationClass/{id}.png` are palette PNGs
whose indices are the object number (1-based, in XML order) and the class number (1..20, VOC's
alphabetical order), 0 background and 255 the void boundary (never part of a mask).

Each XML object becomes one annotation: box and `difficult` from the XML (VOC's 1-based inclusive
corners to XYWH), mask = the object's pixels in SegmentationObject as RLE. An object without
pixels keeps its box with `has_mask=False`. The class must agree with SegmentationClass under
the object's pixels; a disagreement, or an object index beyond the XML objects, is a DataError.
"""

from __future__ import annotations

import hashlib
import io
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from shapeprop.data.masks import mask_to_rle
from shapeprop.data.records import (
    BOX_MODE_XYWH_ABS,
    DataError,
    Dataset,
    DatasetMetadata,
    Requirement,
    check_images_exist,
    class_index,
    require_dir,
    require_file,
)

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
]  # fmt: skip
VOID = 255


def read_palette_png(data: bytes, path: Path) -> np.ndarray:
    """Palette indices of a VOC label PNG; RGB or unreadable files raise DataError naming `path`."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode not in ("P", "L"):
                raise DataError(
                    f"expected a palette (P) or grey PNG of class indices, got mode {image.mode}", path
                )
            return np.asarray(image)
    except OSError as exc:
        raise DataError(f"unreadable PNG: {exc}", path) from exc


def _text(node: ET.Element, tag: str, path: Path, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise DataError("missing element", path, f"{where}/{tag}")
    return child.text.strip()


def parse_voc_xml(data: bytes, path: Path) -> tuple[tuple[int, int] | None, list[dict[str, Any]]]:
    """((height, width) or None, objects with name, difficult, truncated and XYWH bbox)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line, col = exc.position
        raise DataError(f"malformed XML at line {line} column {col}: {exc}", path) from exc
    size = root.find("size")
    hw = None
    if size is not None and size.find("height") is not None:
        hw = (int(_text(size, "height", path, "size")), int(_text(size, "width", path, "size")))
    objects = []
    for i, obj in enumerate(root.findall("object")):
        where = f"object[{i}]"
        name = _text(obj, "name", path, where)
        box = obj.find("bndbox")
        if box is None:
            raise DataError("missing element", path, f"{where}/bndbox")
        try:
            x1, y1, x2, y2 = (
                float(_text(box, k, path, f"{where}/bndbox")) for k in ("xmin", "ymin", "xmax", "ymax")
            )
        except ValueError as exc:
            raise DataError(f"non-numeric box corner: {exc}", path, f"{where}/bndbox") from exc
        flag = obj.find("difficult")
        objects.append(
            {
                "name": name,
                "difficult": flag is not None and (flag.text or "0").strip() == "1",
                "bbox": [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1],
            }
        )
    return hw, objects


def _voc_record(root: Path, image_id: str, digest: Any, ids: dict[str, int]) -> dict[str, Any]:
    xml_path = require_file(root / "Annotations" / f"{image_id}.xml", "annotation XML")
    obj_path = require_file(root / "SegmentationObject" / f"{image_id}.png", "SegmentationObject PNG")
    cls_path = require_file(root / "SegmentationClass" / f"{image_id}.png", "SegmentationClass PNG")
    raw = {p: p.read_bytes() for p in (xml_path, obj_path, cls_path)}
    for path, data in raw.items():
        digest.update(path.name.encode() + b"\0" + data)
    _, objects = parse_voc_xml(raw[xml_path], xml_path)
    instances = read_palette_png(raw[obj_path], obj_path)
    classes = read_palette_png(raw[cls_path], cls_path)
    if instances.shape != classes.shape:
        raise DataError(
            f"shape {classes.shape} differs from SegmentationObject's {instances.shape}", cls_path
        )
    height, width = instances.shape
    present = set(np.unique(instances).tolist()) - {0, VOID}
    if present and max(present) > len(objects):
        raise DataError(
            f"object index {max(present)} has no matching object in {xml_path.name} ({len(objects)} objects)",
            obj_path,
        )
    annotations = []
    for index, obj in enumerate(objects, start=1):
        where = f"object[{index - 1}]/name"
        if obj["name"] not in ids:
            raise DataError(f"unknown VOC class {obj['name']!r}", xml_path, where)
        mask = instances == index
        if mask.any():
            values, counts = np.unique(classes[mask], return_counts=True)
            pixel_class = int(values[np.argmax(counts)])
            if pixel_class != ids[obj["name"]] + 1:
                seen = VOC_CLASSES[pixel_class - 1] if 1 <= pixel_class <= 20 else f"index {pixel_class}"
                raise DataError(
                    f"object {index} is {obj['name']!r} in the XML but {seen!r} in SegmentationClass",
                    cls_path,
                    where,
                )
        annotations.append(
            {
                "bbox": obj["bbox"],
                "bbox_mode": BOX_MODE_XYWH_ABS,
                "category_id": ids[obj["name"]],
                "segmentation": mask_to_rle(mask) if mask.any() else None,
                "iscrowd": 0,
                "has_mask": bool(mask.any()),
                "difficult": obj["difficult"],
            }
        )
    return {
        "file_name": str(root / "JPEGImages" / f"{image_id}.jpg"),
        "height": height,
        "width": width,
        "image_id": image_id,
        "annotations": annotations,
    }


def voc_root(root: Path) -> Path:
    """`root` itself, or `root/VOC2012` when given the VOCdevkit directory."""
    require_dir(root, "VOC root")
    return root / "VOC2012" if (root / "VOC2012").is_dir() and not (root / "ImageSets").is_dir() else root


def voc_2012_requirements(root: Path, split: str = "train") -> list[Requirement]:
    """What `load_voc_2012` reads: the split's image list, the annotation, mask and image folders."""
    if (root / "VOC2012").is_dir() and not (root / "ImageSets").is_dir():
        root = root / "VOC2012"
    return [
        Requirement(
            f"image list of split {split!r}", (root / "ImageSets" / "Segmentation" / f"{split}.txt",)
        ),
        Requirement("annotation folder", (root / "Annotations",)),
        Requirement("instance mask folder", (root / "SegmentationObject",)),
        Requirement("image folder", (root / "JPEGImages",)),
    ]


def load_voc_2012(root: Path, split: str = "train", check_images: bool = True) -> Dataset:
    """VOC 2012 instance segmentation for `split` (train / val / trainval)."""
    root = voc_root(root)
    list_path = require_file(
        root / "ImageSets" / "Segmentation" / f"{split}.txt", f"image list of split {split!r}"
    )
    image_ids = [line.split()[0] for line in list_path.read_text().splitlines() if line.strip()]
    digest = hashlib.sha256(list_path.read_bytes())
    ids = class_index(VOC_CLASSES)
    records = [_voc_record(root, image_id, digest, ids) for image_id in image_ids]
    if check_images:
        check_images_exist(records, str(list_path))
    metadata = DatasetMetadata(
        name="voc_2012",
        classes=list(VOC_CLASSES),
        class_groups={"voc": list(VOC_CLASSES)},
        fingerprint=digest.hexdigest(),
        root=root,
        split=split,
    )
    return Dataset(records, metadata)
