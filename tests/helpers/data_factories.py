"""Writers of small datasets in their real on-disk formats, for tests (any engineer's).

Each writer returns the ground truth it encoded (masks as numpy arrays, boxes, classes), so a
test can check a loader against what was written rather than against hard-coded numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE (`counts` a list of run lengths, column-major, zeros first)."""
    flat = mask.astype(np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0, *runs]
    return {"size": list(mask.shape), "counts": runs}


def compressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's compressed RLE with `counts` as a str (as in the JSON files)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def polygon_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """The mask pycocotools draws for `polygons` (the reference rasteriser)."""
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)))


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- COCO ----------------------------------------------------------------------------------------

COCO_CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
    {"id": 25, "name": "giraffe", "supercategory": "animal"},
]


def write_coco(root: Path, split: str = "val", height: int = 48, width: int = 64) -> dict[str, Any]:
    """A COCO 2017 layout with polygons (one two-part), a compressed RLE and an uncompressed-RLE crowd.

    Returns {"json": path, "masks": {ann_id: mask}, "crowd_ids": [...], "categories": [...]} with
    two images (ids 7 and 9) and non-contiguous category ids 1, 3, 18, 25.
    """
    image_dir = root / f"{split}2017"
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    images, annotations, masks = [], [], {}
    for image_id in (7, 9):
        name = f"{image_id:012d}.jpg"
        Image.fromarray(random_image(height, width, image_id)).save(image_dir / name, quality=90)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})

    def add(ann_id, image_id, cat, segm, mask, iscrowd=0):
        rle = mask_utils.encode(np.asfortranarray(mask))
        bbox = [float(v) for v in mask_utils.toBbox(rle)]
        annotations.append(
            {"id": ann_id, "image_id": image_id, "category_id": cat, "segmentation": segm,
             "area": float(mask.sum()), "bbox": bbox, "iscrowd": iscrowd}
        )  # fmt: skip
        masks[ann_id] = mask

    triangle = [[5.0, 5.0, 30.0, 5.0, 5.0, 30.0]]
    add(1, 7, 1, triangle, polygon_mask(triangle, height, width))
    two_parts = [[35.0, 10.0, 45.0, 10.0, 45.0, 20.0, 35.0, 20.0], [50.0, 30.0, 60.0, 30.0, 55.0, 40.0]]
    add(2, 7, 25, two_parts, polygon_mask(two_parts, height, width))
    ring = np.zeros((height, width), np.uint8)
    ring[10:30, 10:30] = 1
    ring[15:25, 15:25] = 0  # a hole: only RLE can say this
    add(3, 9, 3, compressed_rle(ring), ring)
    crowd = np.zeros((height, width), np.uint8)
    crowd[30:46, 20:60] = 1
    add(4, 9, 1, uncompressed_rle(crowd), crowd, iscrowd=1)
    dog = np.zeros((height, width), np.uint8)
    dog[2:12, 40:62] = 1
    add(5, 9, 18, compressed_rle(dog), dog)
    data = {"images": images, "annotations": annotations, "categories": COCO_CATEGORIES}
    json_path = root / "annotations" / f"instances_{split}2017.json"
    json_path.write_text(json.dumps(data))
    return {"json": json_path, "masks": masks, "crowd_ids": [4], "categories": COCO_CATEGORIES}


# --- PASCAL VOC 2012 -----------------------------------------------------------------------------

VOC_NAMES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
]  # fmt: skip


def voc_palette() -> list[int]:
    """The VOC colour map (bit-interleaved), 256 RGB entries flattened, as the devkit writes it."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def _palette_png(indices: np.ndarray, path: Path) -> None:
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette(voc_palette())
    image.save(path)


def _voc_xml(image_id: str, height: int, width: int, objects: list[dict[str, Any]]) -> str:
    parts = [f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename>",
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
             "<segmented>1</segmented>"]  # fmt: skip
    for obj in objects:
        x1, y1, x2, y2 = obj["corners"]  # 1-based inclusive, as VOC writes them
        parts.append(
            f"<object><name>{obj['name']}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{int(obj.get('difficult', False))}</difficult>"
            f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    return "\n".join([*parts, "</annotation>"])


def write_voc(root: Path, height: int = 40, width: int = 56) -> dict[str, Any]:
    """A `VOCdevkit/VOC2012` tree with two train images and one val image.

    Object masks carry a 1-pixel void (255) border in both label PNGs, as VOC does. Image
    2007_000002 has an object with no pixels (box only). Returns {"root": VOC2012 dir,
    "objects": {image_id: [{"name", "difficult", "bbox" (XYWH), "mask"}]}, "splits": {...}}.
    """
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in (
        "JPEGImages",
        "Annotations",
        "SegmentationObject",
        "SegmentationClass",
        "ImageSets/Segmentation",
    ):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width]
    layouts = {
        "2007_000001": [("dog", (yy - 15) ** 2 + (xx - 15) ** 2 <= 81, False),
                        ("person", (yy >= 5) & (yy < 35) & (xx >= 30) & (xx < 50) & ~((yy > 15) & (xx > 38)), True)],
        "2007_000002": [("car", (yy >= 20) & (yy < 36) & (xx >= 4) & (xx < 40), False),
                        ("bottle", np.zeros_like(yy, bool), False)],
        "2008_000003": [("cat", (yy >= 8) & (yy < 30) & (xx >= 10) & (xx < 46), False)],
    }  # fmt: skip
    objects: dict[str, list[dict[str, Any]]] = {}
    for image_id, layout in layouts.items():
        inst = np.zeros((height, width), np.uint8)
        cls = np.zeros((height, width), np.uint8)
        entries = []
        for k, (name, mask, difficult) in enumerate(layout, start=1):
            if mask.any():
                ys, xs = np.nonzero(mask)
                corners = (xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1)
            else:
                corners = (45, 2, 52, 9)  # annotated box, no segmented pixels
            # void border: dilate by one pixel, mark the ring 255
            grown = mask.copy()
            grown[1:] |= mask[:-1]
            grown[:-1] |= mask[1:]
            grown[:, 1:] |= mask[:, :-1]
            grown[:, :-1] |= mask[:, 1:]
            inst[grown & ~mask], cls[grown & ~mask] = 255, 255
            inst[mask], cls[mask] = k, VOC_NAMES.index(name) + 1
            x1, y1, x2, y2 = corners
            entries.append({"name": name, "difficult": difficult, "corners": corners,
                            "bbox": [x1 - 1.0, y1 - 1.0, x2 - x1 + 1.0, y2 - y1 + 1.0], "mask": mask.astype(np.uint8)})  # fmt: skip
        # the later object wins where masks overlap; recompute what is really visible
        for k, entry in enumerate(entries, start=1):
            entry["mask"] = (inst == k).astype(np.uint8)
        Image.fromarray(random_image(height, width, len(objects))).save(
            voc / "JPEGImages" / f"{image_id}.jpg"
        )
        (voc / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(image_id, height, width, entries))
        _palette_png(inst, voc / "SegmentationObject" / f"{image_id}.png")
        _palette_png(cls, voc / "SegmentationClass" / f"{image_id}.png")
        objects[image_id] = entries
    splits = {"train": ["2007_000001", "2007_000002"], "val": ["2008_000003"]}
    for split, ids in splits.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (voc / "ImageSets" / "Segmentation" / "trainval.txt").write_text(
        "\n".join(splits["train"] + splits["val"]) + "\n"
    )
    return {"root": voc, "objects": objects, "splits": splits}


# --- BDD100K -------------------------------------------------------------------------------------

BDD_INS_SEG = ["pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]


def _bitmask_png(height: int, width: int, instances: list[dict[str, Any]], path: Path) -> None:
    """RGBA bitmask: R category id (1-based), G attribute bits, (B << 8) + A the instance id."""
    pixels = np.zeros((height, width, 4), np.uint8)
    for inst in instances:
        m = inst["mask"].astype(bool)
        attrs = (int(inst.get("truncated", 0)) << 3) | (int(inst.get("occluded", 0)) << 2)
        attrs |= (int(inst.get("crowd", 0)) << 1) | int(inst.get("ignore", 0))
        pixels[m] = [
            BDD_INS_SEG.index(inst["category"]) + 1,
            attrs,
            inst["ann_id"] >> 8,
            inst["ann_id"] & 255,
        ]
    Image.fromarray(pixels, mode="RGBA").save(path)


def write_bdd100k(root: Path, height: int = 36, width: int = 64) -> dict[str, Any]:
    """A `bdd100k` tree: 10K images with bitmasks AND the RLE JSON (same content), 100K images with
    det_20 JSON. Train: ins-seg images `aaa`, `bbb`; det images `bbb` (overlap), `ccc`, `ddd`.
    Val: ins-seg image `vvv`, det image `www`.

    Returns {"ins_seg": {split: {name: [instances]}}, "det": {split: {name: [labels]}}}.
    """
    yy, xx = np.mgrid[0:height, 0:width]
    ins_seg = {
        "train": {
            "aaa": [
                {"category": "car", "ann_id": 1, "mask": (yy >= 10) & (yy < 30) & (xx >= 5) & (xx < 30)},
                {
                    "category": "pedestrian",
                    "ann_id": 2,
                    "mask": (yy >= 4) & (yy < 34) & (xx >= 40) & (xx < 46),
                },
                {
                    "category": "pedestrian",
                    "ann_id": 300,
                    "crowd": 1,
                    "mask": (yy >= 0) & (yy < 8) & (xx >= 50),
                },
            ],
            "bbb": [
                {"category": "bus", "ann_id": 1, "occluded": 1, "mask": (yy - 18) ** 2 + (xx - 32) ** 2 < 100}
            ],
        },
        "val": {
            "vvv": [
                {"category": "bicycle", "ann_id": 5, "mask": (yy >= 3) & (yy < 20) & (xx >= 3) & (xx < 20)}
            ]
        },
    }
    det = {
        "train": {
            "bbb": [{"category": "truck", "box2d": {"x1": 1.0, "y1": 1.0, "x2": 10.0, "y2": 10.0}}],
            "ccc": [
                {"category": "car", "box2d": {"x1": 2.0, "y1": 3.0, "x2": 20.5, "y2": 15.0}},
                {"category": "traffic light", "box2d": {"x1": 30.0, "y1": 2.0, "x2": 33.0, "y2": 9.0}},
                {"category": "other vehicle", "box2d": {"x1": 40.0, "y1": 10.0, "x2": 60.0, "y2": 30.0}},
                {"category": "pedestrian", "attributes": {"crowd": True}, "box2d": {"x1": 5.0, "y1": 20.0, "x2": 9.0, "y2": 34.0}},
            ],
            "ddd": [],
        },
        "val": {"www": [{"category": "bus", "box2d": {"x1": 0.0, "y1": 0.0, "x2": 30.0, "y2": 20.0}}]},
    }  # fmt: skip
    seed = 0
    for split, frames in ins_seg.items():
        images = root / "images" / "10k" / split
        masks = root / "labels" / "ins_seg" / "bitmasks" / split
        images.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        rle_frames = []
        for name, instances in frames.items():
            seed += 1
            Image.fromarray(random_image(height, width, seed)).save(images / f"{name}.jpg")
            _bitmask_png(height, width, instances, masks / f"{name}.png")
            labels = [
                {"id": str(inst["ann_id"]), "category": inst["category"],
                 "attributes": {"crowd": bool(inst.get("crowd")), "occluded": bool(inst.get("occluded")),
                                "truncated": False},
                 "rle": compressed_rle(inst["mask"])}
                for inst in instances
            ]  # fmt: skip
            rle_frames.append({"name": f"{name}.jpg", "labels": labels})
        rles = root / "labels" / "ins_seg" / "rles"
        rles.mkdir(parents=True, exist_ok=True)
        (rles / f"ins_seg_{split}.json").write_text(json.dumps({"frames": rle_frames, "config": {}}))
    for split, frames in det.items():
        images = root / "images" / "100k" / split
        images.mkdir(parents=True, exist_ok=True)
        det_frames = []
        for name, labels in frames.items():
            seed += 1
            Image.fromarray(random_image(height, width, seed)).save(images / f"{name}.jpg")
            det_frames.append(
                {"name": f"{name}.jpg", "attributes": {"weather": "clear"},
                 "labels": [{"id": str(i), "attributes": {"occluded": False}, **label} for i, label in enumerate(labels)]}
            )  # fmt: skip
        det_dir = root / "labels" / "det_20"
        det_dir.mkdir(parents=True, exist_ok=True)
        (det_dir / f"det_{split}.json").write_text(json.dumps(det_frames))
    return {"ins_seg": ins_seg, "det": det}
