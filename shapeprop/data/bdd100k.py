"""BDD100K: instance segmentation (10K images), detection (100K images) and the paper's fused set.

Layout under `root` (the `bdd100k` directory of the official archives):

- `images/10k/{split}/<name>.jpg`, `images/100k/{split}/<name>.jpg`;
- instance segmentation, either `labels/ins_seg/bitmasks/{split}/<name>.png` (RGBA: R = category
  id 1..8, G = attribute bits truncated<<3 | occluded<<2 | crowd<<1 | ignore, instance id =
  (B << 8) + A) or, in later releases, `labels/ins_seg/rles/ins_seg_{split}.json` (Scalabel
  frames whose labels carry `rle: {counts, size}`);
- detection, `labels/det_20/det_{split}.json` (Scalabel frames with `box2d`, inclusive corners),
  or the 2018 release's `labels/bdd100k_labels_images_{split}.json`.

Classes: instance segmentation has 8 (pedestrian, rider, car, truck, bus, train, motorcycle,
bicycle); detection adds traffic light and traffic sign. Mapping between label sets:

- 2018 detection names: person -> pedestrian, bike -> bicycle, motor -> motorcycle (the rest
  keep their names); labels without `box2d` (lanes, drivable area) are not objects and are skipped;
- "other person" -> pedestrian, "other vehicle" -> car, "trailer" -> truck, as crowd (ignored)
  regions, following BDD100K's own evaluation;
- fused set: the 8 instance-segmentation classes; detection's traffic light / traffic sign boxes
  are left out (no mask of those classes exists anywhere, and the fused set is evaluated on masks).

Fused `train` = every instance-segmentation train image (boxes from its masks, `has_mask=True`)
plus every detection train image not already among them (boxes only, `has_mask=False`); an image
in both sets (same name) takes its instance-segmentation labels. Fused `val` = the instance
segmentation val images (the paper tests on those 1k images).

Crowd or ignore flags become `iscrowd=1`. Boxes of mask annotations are the mask extents.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from shapeprop.data.masks import rle_bbox
from shapeprop.data.records import (
    BOX_MODE_XYWH_ABS,
    DataError,
    Dataset,
    DatasetMetadata,
    MissingDataError,
    Requirement,
    check_images_exist,
    class_index,
    hash_files,
    read_json,
    require_dir,
)

INS_SEG_CLASSES = ["pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
DET_CLASSES = [*INS_SEG_CLASSES, "traffic light", "traffic sign"]
RENAMED = {"person": "pedestrian", "bike": "bicycle", "motor": "motorcycle"}
IGNORED_AS = {"other person": "pedestrian", "other vehicle": "car", "trailer": "truck"}
NOT_OBJECTS = {"lane", "drivable area", "area/drivable", "area/alternative", "area/unknown"}
GROUPS = {"vehicles": ["car", "truck", "bus", "train"], "humans": ["pedestrian", "rider"]}


def _paths(root: Path, split: str) -> dict[str, Path]:
    labels = root / "labels"
    return {
        "images_10k": root / "images" / "10k" / split,
        "images_100k": root / "images" / "100k" / split,
        "bitmasks": labels / "ins_seg" / "bitmasks" / split,
        "rles": labels / "ins_seg" / "rles" / f"ins_seg_{split}.json",
        "det": labels / "det_20" / f"det_{split}.json",
        "det_2018": labels / f"bdd100k_labels_images_{split}.json",
    }


def _category(name: Any, classes: dict[str, int], path: Path, where: str) -> tuple[int, bool] | None:
    """(category_id, ignored) for a Scalabel category name; None for non-object labels."""
    if name in NOT_OBJECTS:
        return None
    name = RENAMED.get(name, name)
    ignored = name in IGNORED_AS
    name = IGNORED_AS.get(name, name)
    if name not in classes:
        raise DataError(f"unknown category {name!r}; known: {', '.join(classes)}", path, where)
    return classes[name], ignored


def _frames(path: Path) -> list[dict[str, Any]]:
    data = read_json(path)
    frames = data.get("frames") if isinstance(data, dict) else data
    if not isinstance(frames, list):
        raise DataError("expected a list of frames (or an object with 'frames')", path)
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or "name" not in frame:
            raise DataError("missing key", path, f"frames[{i}].name")
        if not isinstance(frame.get("labels") or [], list):
            raise DataError("not a list", path, f"frames[{i}].labels")
    return frames


def _flags(attributes: Any) -> bool:
    attributes = attributes if isinstance(attributes, dict) else {}
    return bool(attributes.get("crowd") or attributes.get("ignore") or attributes.get("ignored"))


def _image_sizes(files: list[Path]) -> list[tuple[int, int]]:
    """(height, width) from image headers, read in threads (only the header is decoded)."""

    def size(path: Path) -> tuple[int, int]:
        try:
            with Image.open(path) as image:
                return image.size[1], image.size[0]
        except FileNotFoundError as exc:
            raise MissingDataError("image not found", path) from exc
        except OSError as exc:
            raise DataError(f"unreadable image: {exc}", path) from exc

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(size, files))


def _workers(n_files: int) -> int:
    """Processes for decoding bitmasks: one per core, none extra for a handful of files."""
    return 1 if n_files < 64 else max(1, min(os.cpu_count() or 1, 16))


def _ann(bbox: list[float], category: int, segmentation: Any, iscrowd: bool) -> dict[str, Any]:
    return {
        "bbox": [float(v) for v in bbox],
        "bbox_mode": BOX_MODE_XYWH_ABS,
        "category_id": category,
        "segmentation": segmentation,
        "iscrowd": int(iscrowd),
        "has_mask": segmentation is not None,
    }


# --- instance segmentation --------------------------------------------------------------------


def parse_bitmask(path: Path) -> tuple[tuple[int, int], list[dict[str, Any]]]:
    """One RGBA bitmask PNG -> ((height, width), annotations with RLE masks)."""
    try:
        with Image.open(path) as image:
            if image.mode != "RGBA":
                raise DataError(f"expected an RGBA bitmask PNG, got mode {image.mode}", path)
            pixels = np.asarray(image)
    except OSError as exc:
        raise DataError(f"unreadable PNG: {exc}", path) from exc
    # one key per (category, instance id); Fortran order so each mask is encoded without a copy
    key = np.asfortranarray(
        (pixels[..., 0].astype(np.uint32) << 16) | (pixels[..., 2].astype(np.uint32) << 8) | pixels[..., 3]
    )
    annotations = []
    for k in np.unique(key[pixels[..., 0] > 0]).tolist():
        cat = k >> 16
        if not 1 <= cat <= len(INS_SEG_CLASSES):
            raise DataError(f"category id {cat} outside 1..{len(INS_SEG_CLASSES)}", path, "R channel")
        mask = key == k
        y, x = np.unravel_index(np.argmax(mask), mask.shape)  # any pixel: attributes are per instance
        attributes = int(pixels[y, x, 1])
        encoded = mask_utils.encode(mask.view(np.uint8))
        rle = {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}
        bbox = [float(v) for v in mask_utils.toBbox(encoded)]
        annotations.append(_ann(bbox, cat - 1, rle, bool(attributes & 0b11)))
    return pixels.shape[:2], annotations


def _ins_seg_from_bitmasks(paths: dict[str, Path]) -> tuple[list[dict[str, Any]], str]:
    folder = require_dir(paths["bitmasks"], "BDD100K instance-segmentation bitmask folder")
    files = sorted(folder.glob("*.png"))
    if not files:
        raise MissingDataError("no bitmask PNGs", folder)
    records = []
    workers = _workers(len(files))
    if workers == 1:
        parsed = list(map(parse_bitmask, files))
    else:
        with ProcessPoolExecutor(workers) as pool:
            parsed = list(pool.map(parse_bitmask, files, chunksize=32))
    for path, ((height, width), anns) in zip(files, parsed, strict=True):
        records.append(
            {
                "file_name": str(paths["images_10k"] / f"{path.stem}.jpg"),
                "height": height,
                "width": width,
                "image_id": path.stem,
                "annotations": anns,
            }
        )
    return records, hash_files(files, folder)


def _ins_seg_from_rles(paths: dict[str, Path]) -> tuple[list[dict[str, Any]], str]:
    path = paths["rles"]
    classes = class_index(INS_SEG_CLASSES)
    frames = _frames(path)
    records, unsized = [], []
    for i, frame in enumerate(frames):
        annotations, size = [], None
        for j, label in enumerate(frame.get("labels") or []):
            where = f"frames[{i}].labels[{j}]"
            found = _category(label.get("category"), classes, path, f"{where}.category")
            if found is None:
                continue
            rle = label.get("rle")
            if not (
                isinstance(rle, dict) and isinstance(rle.get("counts"), str) and len(rle.get("size", ())) == 2
            ):
                raise DataError("expected {counts: str, size: [h, w]}", path, f"{where}.rle")
            size = (int(rle["size"][0]), int(rle["size"][1]))
            rle = {"size": list(size), "counts": rle["counts"]}
            annotations.append(
                _ann(rle_bbox(rle), found[0], rle, found[1] or _flags(label.get("attributes")))
            )
        name = Path(frame["name"]).stem
        records.append(
            {
                "file_name": str(paths["images_10k"] / f"{name}.jpg"),
                "height": size[0] if size else 0,
                "width": size[1] if size else 0,
                "image_id": name,
                "annotations": annotations,
            }
        )
        if size is None:
            unsized.append(records[-1])
    for record, (h, w) in zip(unsized, _image_sizes([Path(r["file_name"]) for r in unsized]), strict=True):
        record["height"], record["width"] = h, w
    return records, hash_files([path])


def _load_ins_seg(root: Path, split: str, label_format: str) -> tuple[list[dict[str, Any]], str]:
    paths = _paths(require_dir(root, "BDD100K root"), split)
    if label_format == "auto":
        label_format = "rles" if paths["rles"].is_file() or not paths["bitmasks"].is_dir() else "bitmasks"
    if label_format == "rles":
        return _ins_seg_from_rles(paths)
    if label_format == "bitmasks":
        return _ins_seg_from_bitmasks(paths)
    raise DataError(
        f"unknown label format {label_format!r}; expected auto, bitmasks or rles", key="label_format"
    )


def ins_seg_requirements(root: Path, split: str = "train", label_format: str = "auto") -> list[Requirement]:
    """What the instance-segmentation loader reads: the bitmasks or the RLE JSON, the 10K images."""
    paths = _paths(root, split)
    labels = {"auto": (paths["rles"], paths["bitmasks"]), "rles": (paths["rles"],)}
    labels["bitmasks"] = (paths["bitmasks"],)
    found = labels.get(label_format, labels["auto"])
    return [
        Requirement("instance segmentation labels", found),
        Requirement("image folder", (paths["images_10k"],)),
    ]


def det_requirements(root: Path, split: str = "train") -> list[Requirement]:
    """What the detection loader reads: the detection labels (2020 or 2018 release), the 100K images."""
    paths = _paths(root, split)
    return [
        Requirement("detection labels", (paths["det"], paths["det_2018"])),
        Requirement("image folder", (paths["images_100k"],)),
    ]


def fused_requirements(root: Path, split: str = "train", label_format: str = "auto") -> list[Requirement]:
    """The fused set reads the instance-segmentation data, and for `train` the detection data too."""
    found = ins_seg_requirements(root, split, label_format)
    return found + (det_requirements(root, split) if split == "train" else [])


def load_bdd100k_ins_seg(
    root: Path, split: str = "train", label_format: str = "auto", check_images: bool = True
) -> Dataset:
    """BDD100K instance segmentation (10K images), from bitmasks or the RLE JSON (`auto`: RLE if present)."""
    records, fingerprint = _load_ins_seg(root, split, label_format)
    if check_images:
        check_images_exist(records, "BDD100K instance segmentation labels")
    meta = DatasetMetadata("bdd100k_ins_seg", list(INS_SEG_CLASSES), dict(GROUPS), fingerprint, root, split)
    return Dataset(records, meta)


# --- detection --------------------------------------------------------------------------------


def _load_det(root: Path, split: str, classes: list[str]) -> tuple[list[dict[str, Any]], str]:
    """Detection frames -> records over `classes`; labels of other known classes are skipped."""
    paths = _paths(require_dir(root, "BDD100K root"), split)
    path = paths["det"] if paths["det"].is_file() or not paths["det_2018"].is_file() else paths["det_2018"]
    frames = _frames(path)
    known = class_index(DET_CLASSES)
    wanted = {known[name]: i for i, name in enumerate(classes)}
    records = []
    for i, frame in enumerate(frames):
        annotations = []
        for j, label in enumerate(frame.get("labels") or []):
            where = f"frames[{i}].labels[{j}]"
            box = label.get("box2d")
            if box is None:
                continue  # lanes, drivable area: poly2d only, not objects
            found = _category(label.get("category"), known, path, f"{where}.category")
            if found is None or found[0] not in wanted:
                continue
            try:
                x1, y1, x2, y2 = (float(box[k]) for k in ("x1", "y1", "x2", "y2"))
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"expected numbers x1, y1, x2, y2 ({exc})", path, f"{where}.box2d") from exc
            bbox = [x1, y1, x2 - x1 + 1, y2 - y1 + 1]  # Scalabel corners are inclusive
            annotations.append(
                _ann(bbox, wanted[found[0]], None, found[1] or _flags(label.get("attributes")))
            )
        name = Path(frame["name"]).stem
        records.append(
            {
                "file_name": str(paths["images_100k"] / f"{name}.jpg"),
                "image_id": name,
                "annotations": annotations,
            }
        )
    if records:
        check_images_exist(records, str(path))
    for record, (h, w) in zip(records, _image_sizes([Path(r["file_name"]) for r in records]), strict=True):
        record["height"], record["width"] = h, w
    return records, hash_files([path])


def load_bdd100k_det(root: Path, split: str = "train") -> Dataset:
    """BDD100K detection (100K images, 10 classes), boxes only (`has_mask=False`)."""
    records, fingerprint = _load_det(root, split, DET_CLASSES)
    meta = DatasetMetadata("bdd100k_det", list(DET_CLASSES), dict(GROUPS), fingerprint, root, split)
    return Dataset(records, meta)


def load_bdd100k_fused(root: Path, split: str = "train", label_format: str = "auto") -> Dataset:
    """The paper's fused set: boxes on every image, masks only on instance-segmentation images."""
    records, seg_fingerprint = _load_ins_seg(root, split, label_format)
    check_images_exist(records, "BDD100K instance segmentation labels")
    digest = hashlib.sha256(seg_fingerprint.encode())
    if split == "train":
        det_records, det_fingerprint = _load_det(root, split, INS_SEG_CLASSES)
        seen = {r["image_id"] for r in records}
        records += [r for r in det_records if r["image_id"] not in seen]
        digest.update(det_fingerprint.encode())
    meta = DatasetMetadata(
        "bdd100k_fused", list(INS_SEG_CLASSES), dict(GROUPS), digest.hexdigest(), root, split
    )
    return Dataset(records, meta)
