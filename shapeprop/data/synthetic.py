"""A synthetic instance-segmentation benchmark, generated from a seed and cached in COCO format.

Ten shape classes in two groups that differ in geometry, named like COCO's groups so a suite
written for COCO's VOC / non-VOC split runs on it unchanged:

- "voc" (compact, convex, solid): ellipse, rectangle, triangle, hexagon, half_disc.
- "nonvoc" (non-convex, with holes or thin parts): ring (a hole), star (deep concavities),
  cross (thin arms), crescent (one concave side), dumbbell (two blobs joined by a thin bar).

A model that only saw masks of the convex group must generalise to holes, concavities and thin
parts to segment the other group well (a box-filling or blob-like mask prior fails there), and
the reverse direction needs it to stop filling concavities. Textures are drawn independently of
the class (striped, checkered, noisy or graded fills on a textured background), so shape is the
only class cue. Objects are painted in order and later ones may hide up to half of an earlier
one; each annotation is the *visible* part (RLE), and its box is exactly that mask's extent.

Image `i` of a split depends only on (seed, split, i, image_size, max_objects, version), so a
larger `num_images` extends a set without changing the images it already had.

Version 2 (`options: {version: 2}`; version 1 stays the default and byte-for-byte the same) takes
away the colour cue that lets a box-driven colour model (GrabCut) find an object's extent: an
object is split into two or three parts by lines through it, each part with its own colours and
texture; a part, or now and then a whole object, is painted in the background's colours (with
another pattern, so its outline stays visible only as a change of texture); and the background
carries unannotated clutter (strokes and irregular blobs in object-like colours), so that colour
contrast with the background no longer marks an object. The extent is then given by shape:
what a learned shape prior, and ShapeProp's propagation, are for.

Layout (also the cache layout): `<root>/annotations/instances_{split}.json`, `<root>/{split}/*.png`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from shapeprop.data.coco import load_coco_json
from shapeprop.data.masks import mask_to_rle, rle_area, rle_bbox
from shapeprop.data.records import DataError, Dataset, read_json

GENERATOR_VERSION = 1  # the default; 2 is the harder variant (module docstring)
GENERATOR_VERSIONS = (1, 2)
VOC_SHAPES = ["ellipse", "rectangle", "triangle", "hexagon", "half_disc"]
NONVOC_SHAPES = ["ring", "star", "cross", "crescent", "dumbbell"]
CLASSES = VOC_SHAPES + NONVOC_SHAPES
CLASS_GROUPS = {"voc": VOC_SHAPES, "nonvoc": NONVOC_SHAPES}
DEFAULT_NUM_IMAGES = {"train": 400, "val": 100, "test": 100}
MIN_VISIBLE = 0.5  # an object keeps at least this fraction of its area visible
MIN_AREA = 24  # pixels


def default_cache_dir() -> Path:
    """`$SHAPEPROP_DATA/synthetic`, else `~/.cache/shapeprop/synthetic`."""
    base = os.environ.get("SHAPEPROP_DATA")
    return Path(base) / "synthetic" if base else Path.home() / ".cache" / "shapeprop" / "synthetic"


# --- shapes: lists of (polygon in a unit frame, 1 = paint / 0 = erase), painted in order --------


def _circle(cx: float, cy: float, r: float, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def _regular(k: int, r: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + np.arange(k) * 2 * np.pi / k
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


def _star() -> np.ndarray:
    outer, inner = _regular(5, 1.0), _regular(5, 0.42, -np.pi / 2 + np.pi / 5)
    return np.stack([outer, inner], 1).reshape(-1, 2)


def _half_disc() -> np.ndarray:
    t = np.linspace(0, np.pi, 25)
    return np.stack([np.cos(t), 0.5 - np.sin(t)], 1)


SHAPES: dict[str, list[tuple[np.ndarray, int]]] = {
    "ellipse": [(_circle(0, 0, 1), 1)],
    "rectangle": [(_box(-1, -0.75, 1, 0.75), 1)],
    "triangle": [(_regular(3, 1.0), 1)],
    "hexagon": [(_regular(6, 1.0, 0), 1)],
    "half_disc": [(_half_disc(), 1)],
    "ring": [(_circle(0, 0, 1), 1), (_circle(0, 0, 0.55), 0)],
    "star": [(_star(), 1)],
    "cross": [(_box(-1, -0.2, 1, 0.2), 1), (_box(-0.2, -1, 0.2, 1), 1)],
    "crescent": [(_circle(0, 0, 1), 1), (_circle(0.5, -0.1, 0.85), 0)],
    "dumbbell": [(_circle(-0.62, 0, 0.38), 1), (_circle(0.62, 0, 0.38), 1), (_box(-0.6, -0.1, 0.6, 0.1), 1)],
}
assert list(SHAPES) == CLASSES


def _rasterize(
    shape: str, center, size: float, aspect: float, angle: float, hw: tuple[int, int]
) -> np.ndarray:
    """The shape's full mask (uint8 0/1) in an image of size hw; `size` is its half-extent in px."""
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    scale = np.array([size * np.sqrt(aspect), size / np.sqrt(aspect)])
    canvas = np.zeros(hw, np.uint8)
    for polygon, value in SHAPES[shape]:
        points = (polygon * scale) @ rot.T + np.asarray(center)
        # 4 fractional bits: sub-pixel vertex positions
        cv2.fillPoly(canvas, [np.round(points * 16).astype(np.int32)], int(value), cv2.LINE_8, shift=4)
    return canvas


# --- textures ------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, hw: tuple[int, int], cells: int) -> np.ndarray:
    grid = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _texture(rng: np.random.Generator, hw: tuple[int, int], colors: np.ndarray) -> np.ndarray:
    """A [h, w, 3] float texture mixing two colours with a random pattern."""
    h, w = hw
    kind = int(rng.integers(4))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # stripes
        theta, period = rng.uniform(0, np.pi), rng.uniform(4, 14)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    elif kind == 1:  # checker
        period = rng.uniform(4, 12)
        t = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32)
    elif kind == 2:  # blotchy noise
        t = _smooth_noise(rng, hw, int(rng.integers(3, 10)))
    else:  # linear gradient
        theta = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(theta) + yy * np.sin(theta)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    return colors[0] + t[..., None] * (colors[1] - colors[0])


def _object_colors(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """Two colours whose mean differs from the background's mean by a visible margin."""
    for _ in range(20):
        base = rng.uniform(0, 255, 3)
        if np.abs(base - background_mean).sum() > 120:
            break
    spread = rng.uniform(20, 70)
    return np.stack([base, base + rng.uniform(-spread, spread, 3)]).clip(0, 255)


def _clutter(rng: np.random.Generator, image: np.ndarray, background_mean: np.ndarray) -> np.ndarray:
    """Version 2: unannotated strokes and irregular blobs in object-like colours on the background."""
    size = image.shape[0]
    canvas = image.copy()
    for _ in range(int(rng.integers(2, 7))):
        color = _object_colors(rng, background_mean)[0].tolist()
        if rng.random() < 0.5:  # a stroke
            p, q = rng.uniform(0, size, (2, 2)).round().astype(int)
            cv2.line(
                canvas, tuple(int(v) for v in p), tuple(int(v) for v in q), color, int(rng.integers(1, 4))
            )
        else:  # a blob: a random polygon around a point, like no class
            k = int(rng.integers(5, 9))
            angles = np.sort(rng.uniform(0, 2 * np.pi, k))
            radii = size * rng.uniform(0.02, 0.08, k)
            center = rng.uniform(0, size, 2)
            points = center + np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
            cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], color)
    return canvas


def _paint_in_parts(
    rng: np.random.Generator, image: np.ndarray, full: np.ndarray, visible: np.ndarray, bg_colors: np.ndarray
) -> np.ndarray:
    """Version 2: paint an object's visible pixels in 2-3 parts cut by lines through it, each part its
    own colours and texture; a part (or, now and then, the whole object) in the background's colours."""
    hw = image.shape[:2]
    ys, xs = np.nonzero(full)
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]]
    part = np.zeros(hw, np.int64)
    for bit in range(int(rng.integers(1, 3))):  # one or two cuts: two to four parts
        cy, cx = rng.normal([ys.mean(), xs.mean()], [ys.std() / 2 + 1e-6, xs.std() / 2 + 1e-6])
        theta = rng.uniform(0, np.pi)
        part += ((xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta) > 0).astype(np.int64) << bit
    camouflaged = rng.random() < 0.15
    background_part = int(rng.integers(part.max() + 1)) if rng.random() < 0.5 else -1
    for k in range(int(part.max()) + 1):
        like_background = camouflaged or k == background_part
        colors = bg_colors + rng.normal(0, 8, bg_colors.shape) if like_background else None
        texture = _texture(rng, hw, colors if like_background else _object_colors(rng, bg_colors.mean(0)))
        image = np.where((visible & (part == k))[..., None], texture, image)
    return image


def render_image(
    seed: int, split: str, index: int, image_size: int, max_objects: int, version: int = 1
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Image `index` of `split`: (uint8 [s, s, 3] RGB, annotations with visible-mask RLEs)."""
    rng = np.random.default_rng([seed, zlib.crc32(split.encode()), index, image_size, max_objects])
    hw = (image_size, image_size)
    bg_colors = rng.uniform(30, 225, (2, 3))
    image = _texture(rng, hw, bg_colors)
    if version >= 2:
        image = _clutter(rng, image, bg_colors.mean(0))

    wanted = int(rng.integers(1, max_objects + 1))
    objects: list[tuple[int, np.ndarray, int, np.ndarray]] = []  # (class, visible, full area, full mask)
    for _ in range(wanted * 8):
        if len(objects) == wanted:
            break
        cls = int(rng.integers(len(CLASSES)))
        size = image_size * rng.uniform(0.07, 0.24)
        center = rng.uniform(0.1 * image_size, 0.9 * image_size, 2)
        full = _rasterize(CLASSES[cls], center, size, rng.uniform(0.6, 1.6), rng.uniform(0, 2 * np.pi), hw)
        full = full.astype(bool)
        area = int(full.sum())
        if area < MIN_AREA:
            continue
        left = [int((visible & ~full).sum()) for _, visible, _, _ in objects]
        if any(n < max(MIN_VISIBLE * a, MIN_AREA) for n, (_, _, a, _) in zip(left, objects, strict=True)):
            continue  # would hide too much of an earlier object: try another placement
        objects = [(c, visible & ~full, a, f) for c, visible, a, f in objects] + [(cls, full, area, full)]

    annotations = []
    for cls, visible, full_area, full in objects:
        if version >= 2:
            image = _paint_in_parts(rng, image, full, visible, bg_colors)
        else:
            texture = _texture(rng, hw, _object_colors(rng, bg_colors.mean(0)))
            image = np.where(visible[..., None], texture, image)
        rle = mask_to_rle(visible)
        annotations.append(
            {
                "category_id": cls + 1,
                "segmentation": rle,
                "area": rle_area(rle),
                "full_area": full_area,  # before occlusion
                "bbox": rle_bbox(rle),
                "iscrowd": 0,
            }
        )
    image = image + rng.normal(0, 6, image.shape)
    return image.clip(0, 255).round().astype(np.uint8), annotations


# --- generation and caching ---------------------------------------------------------------------


def _options(num_images: int, image_size: int, seed: int, max_objects: int, version: int) -> dict[str, int]:
    return {
        "version": version,
        "num_images": num_images,
        "image_size": image_size,
        "seed": seed,
        "max_objects": max_objects,
    }


def cache_key(options: dict[str, int]) -> str:
    """Directory name under the cache dir; different options never share a directory."""
    o = options
    return f"v{o['version']}-n{o['num_images']}-px{o['image_size']}-obj{o['max_objects']}-seed{o['seed']}"


def generate(root: Path, split: str, options: dict[str, int]) -> Path:
    """Write `split` under `root` in COCO format; returns the JSON path.

    Written into a temporary directory next to the target and renamed into place; the JSON is
    renamed last, so its presence means the split is complete. Two processes racing produce the
    same bytes, so whichever rename lands first is as good as the other.
    """
    root.mkdir(parents=True, exist_ok=True)
    json_path = root / "annotations" / f"instances_{split}.json"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{split}-", dir=root))
    try:
        (tmp / split).mkdir()
        images, annotations = [], []
        for index in range(options["num_images"]):
            image, anns = render_image(
                options["seed"],
                split,
                index,
                options["image_size"],
                options["max_objects"],
                options["version"],
            )
            image_id = index + 1
            file_name = f"{image_id:06d}.png"
            Image.fromarray(image).save(tmp / split / file_name)
            images.append(
                {"id": image_id, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]}
            )
            for ann in anns:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
        data = {
            "info": {"description": "shapeprop synthetic shapes", "generator": options},
            "images": images,
            "annotations": annotations,
            "categories": [
                {"id": i + 1, "name": name, "supercategory": "voc" if name in VOC_SHAPES else "nonvoc"}
                for i, name in enumerate(CLASSES)
            ],
        }
        (tmp / "instances.json").write_text(json.dumps(data, sort_keys=True, separators=(",", ":")))
        try:
            os.rename(tmp / split, root / split)
        except OSError:
            if not (root / split).is_dir():
                raise
            # another process already renamed its (identical) images into place
        json_path.parent.mkdir(exist_ok=True)
        os.replace(tmp / "instances.json", json_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return json_path


def load_synthetic(
    root: Path | None = None,
    split: str = "train",
    num_images: int | None = None,
    image_size: int = 128,
    seed: int = 0,
    max_objects: int = 6,
    version: int = GENERATOR_VERSION,
    test_images: int | None = None,
) -> Dataset:
    """The synthetic set for `split` (train / val / test), generated on first use.

    `num_images` defaults to 400 for train and 100 otherwise; `test_images`, when given, is the
    size of the val and test splits alone (a claim's image term shrinks with it, the training set
    stays as it is). `version` picks the generator (module docstring). `root` None = the cache dir
    keyed by the options. A `root` that already holds this split made with other options is an error.
    """
    if split not in DEFAULT_NUM_IMAGES:
        raise DataError(f"unknown split {split!r}; expected one of {sorted(DEFAULT_NUM_IMAGES)}", key="split")
    num_images = DEFAULT_NUM_IMAGES[split] if num_images is None else int(num_images)
    if test_images is not None and split != "train":
        num_images = int(test_images)
    for key, value, low in (
        ("num_images", num_images, 1),
        ("image_size", image_size, 32),
        ("max_objects", max_objects, 1),
    ):
        if int(value) < low:
            raise DataError(f"must be at least {low}, got {value}", key=f"options.{key}")
    if version not in GENERATOR_VERSIONS:
        raise DataError(
            f"unknown generator version {version!r}; expected one of {GENERATOR_VERSIONS}",
            key="options.version",
        )
    options = _options(num_images, int(image_size), int(seed), int(max_objects), int(version))
    root = Path(root) if root is not None else default_cache_dir() / cache_key(options)
    json_path = root / "annotations" / f"instances_{split}.json"
    if not json_path.is_file():
        generate(root, split, options)
    else:
        made_with = (read_json(json_path).get("info") or {}).get("generator")
        if made_with != options:
            raise DataError(
                f"holds a synthetic {split} set generated with {made_with}, but {options} was asked for; "
                "use another root (or none, for the cache)",
                json_path,
            )
    dataset = load_coco_json(json_path, root / split, "synthetic", split, class_groups=CLASS_GROUPS)
    dataset.metadata.root = root
    return dataset


def file_digest(root: Path, split: str) -> str:
    """sha256 over a generated split's JSON and PNG bytes (for determinism checks)."""
    paths = sorted((root / split).iterdir()) + [root / "annotations" / f"instances_{split}.json"]
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()
