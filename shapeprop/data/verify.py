"""Check a dataset root: loadable annotations, images present and readable, boxes and masks sane.

`verify_dataset` never raises for bad data: it returns every problem found, each naming the file,
the key and what is wrong, so one run lists them all.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from shapeprop.config import DataConfig
from shapeprop.data import source
from shapeprop.data.masks import annotation_to_rle, rle_area, rle_bbox
from shapeprop.data.records import DataError

BOX_TOLERANCE = 1.0  # pixels a box may pass the image border (rounding in real annotations)


@dataclass
class Problem:
    path: str
    key: str
    problem: str

    def __str__(self) -> str:
        return ": ".join(p for p in (self.path, self.key, self.problem) if p)


@dataclass
class VerifyReport:
    dataset: str
    root: str
    split: str
    images: int = 0
    annotations: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_image(record: dict[str, Any], decode: bool) -> Problem | None:
    path = record["file_name"]
    try:
        with Image.open(path) as image:
            size = image.size
            if decode:
                image.load()  # a truncated file fails here
    except FileNotFoundError:
        return Problem(path, "", "image not found")
    except OSError as exc:
        return Problem(path, "", f"unreadable image: {exc}")
    if size != (record["width"], record["height"]):
        return Problem(
            path,
            "width/height",
            f"image is {size[0]}x{size[1]}, annotations say {record['width']}x{record['height']}",
        )
    return None


def _check_annotations(record: dict[str, Any], classes: int) -> list[Problem]:
    problems = []
    height, width = record["height"], record["width"]
    for i, ann in enumerate(record["annotations"]):
        key = f"image {record['image_id']} annotation {i}"
        x, y, w, h = ann["bbox"]
        if w <= 0 or h <= 0:
            problems.append(Problem(record["file_name"], f"{key} bbox", f"empty box {ann['bbox']}"))
        elif (
            x < -BOX_TOLERANCE
            or y < -BOX_TOLERANCE
            or x + w > width + BOX_TOLERANCE
            or y + h > height + BOX_TOLERANCE
        ):
            problems.append(
                Problem(
                    record["file_name"], f"{key} bbox", f"box {ann['bbox']} out of the {width}x{height} image"
                )
            )
        if not 0 <= ann["category_id"] < classes:
            problems.append(
                Problem(record["file_name"], f"{key} category_id", f"{ann['category_id']} out of range")
            )
        if ann.get("segmentation") is None:
            continue
        try:
            rle = annotation_to_rle(ann, height, width)
        except (DataError, ValueError, TypeError) as exc:
            problems.append(Problem(record["file_name"], f"{key} segmentation", f"cannot decode: {exc}"))
            continue
        if list(rle["size"]) != [height, width]:
            problems.append(
                Problem(
                    record["file_name"],
                    f"{key} segmentation",
                    f"mask size {list(rle['size'])} != image {[height, width]}",
                )
            )
        elif rle_area(rle) == 0:
            problems.append(Problem(record["file_name"], f"{key} segmentation", "empty mask"))
        elif not ann.get("iscrowd"):
            mx, my, mw, mh = rle_bbox(rle)
            if (
                mx < x - BOX_TOLERANCE
                or my < y - BOX_TOLERANCE
                or mx + mw > x + w + BOX_TOLERANCE
                or my + mh > y + h + BOX_TOLERANCE
            ):
                problems.append(
                    Problem(
                        record["file_name"],
                        f"{key} segmentation",
                        f"mask extent {[mx, my, mw, mh]} outside box {ann['bbox']}",
                    )
                )
    return problems


def verify_dataset(data: DataConfig, split: str, decode_images: bool = False) -> VerifyReport:
    """Load split `split` of the dataset `data` describes and list every problem: load errors,
    images, boxes, masks.

    `decode_images` decodes every image fully (catches truncated files; slower); otherwise only
    the headers are read.
    """
    report = VerifyReport(data.dataset, _where(data), split)
    try:  # images unchecked: the report lists the missing ones one by one below
        dataset = source.load_data(data, split, check_images=False)
    except DataError as exc:
        report.problems.append(Problem(str(exc.path or report.root), exc.key or "", exc.problem))
        return report
    report.images = len(dataset.records)
    report.annotations = sum(len(r["annotations"]) for r in dataset.records)
    with ThreadPoolExecutor(8) as pool:
        image_problems = pool.map(lambda r: _check_image(r, decode_images), dataset.records)
        report.problems += [p for p in image_problems if p is not None]
    for record in dataset.records:
        report.problems += _check_annotations(record, len(dataset.metadata.classes))
    return report


def _where(data: DataConfig) -> str:
    if data.files:
        return ", ".join(f"{split}: {f.annotations}" for split, f in data.files.items())
    return str(data.root)
