"""The synthetic benchmark's images: ten shape classes in two groups, painted with textures.

Version 1 and 2 groups differ in geometry, named like COCO's groups so a suite written for COCO's
VOC / non-VOC split runs on it unchanged:

- "voc" (compact, convex, solid): ellipse, rectangle, triangle, hexagon, half_disc.
- "nonvoc" (non-convex, with holes or thin parts): ring (a hole), star (deep concavities),
  cross (thin arms), crescent (one concave side), dumbbell (two blobs joined by a thin bar).

In versions 1 and 2 textures are drawn independently of the class (striped, checkered, noisy or
graded fills on a textured background), so shape is the only class cue. Objects are painted in
order and later ones may hide up to half of an earlier one; each annotation is the *visible* part
(RLE), and its box is exactly that mask's extent.

Version 1: every object's colours are far from the background's.

Version 2 takes away the colour cue that lets a box-driven colour model (GrabCut) find an object's
extent: an object is split into two or three parts by lines through it, each part with its own
colours and texture; a part, or now and then a whole object, is painted in the background's colours
(with another pattern, so its outline stays visible only as a change of texture); and the background
carries unannotated clutter (strokes and irregular blobs in object-like colours). Its detector
reached only 7-9 box AP in miniature.

Version 3 (issue 41) keeps objects detectable and their extent hidden from colour models: one palette
per image, objects told from the background by pattern alone, with unannotated patches in patterns
too (`_render_v3`); each class its own pattern (a family and a period band, `V3_CLASS_PATTERNS`), as
each COCO category has its own appearance, which boxes alone can teach; sizes spanning COCO's three
area ranges; and groups that each hold both kinds of geometry (`V3_CLASS_GROUPS`), so extent
learned on one group can transfer to the other, as it does between COCO's groups.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from shapeprop.data.masks import mask_to_rle, rle_area, rle_bbox

VOC_SHAPES = ["ellipse", "rectangle", "triangle", "hexagon", "half_disc"]
NONVOC_SHAPES = ["ring", "star", "cross", "crescent", "dumbbell"]
CLASSES = VOC_SHAPES + NONVOC_SHAPES  # category id = index + 1, in every version
CLASS_GROUPS = {"voc": VOC_SHAPES, "nonvoc": NONVOC_SHAPES}  # versions 1 and 2
# Version 3: convex and non-convex shapes (a hole, thin parts, concavities) in both groups.
V3_CLASS_GROUPS = {
    "voc": ["ellipse", "triangle", "ring", "cross", "crescent"],
    "nonvoc": ["rectangle", "hexagon", "half_disc", "star", "dumbbell"],
}
V3_HALF_EXTENT = (0.07, 0.24)  # of the image size, uniform, as in versions 1 and 2
V3_LARGE_HALF_EXTENT = (0.45, 0.6)  # the first object of an image, with probability V3_LARGE_SHARE
V3_LARGE_SHARE = 0.35
V3_CLUTTER = (2, 6)  # unannotated patterned patches per image (low, high exclusive)
# Version 3: each class its own pattern, a family and a period band (px), as each COCO category has an
# appearance of its own. Each family serves one class of each group, fine in one and coarse in the
# other, so a pattern seen as an object in one group is a near miss of one in the other.
V3_FINE, V3_COARSE = (3.5, 5.5), (7.0, 10.0)
V3_CLASS_PATTERNS = {
    "ellipse": ("stripes", V3_FINE),
    "rectangle": ("stripes", V3_COARSE),
    "triangle": ("checks", V3_COARSE),
    "hexagon": ("checks", V3_FINE),
    "ring": ("dots", V3_FINE),
    "half_disc": ("dots", V3_COARSE),
    "cross": ("rings", V3_COARSE),
    "star": ("rings", V3_FINE),
    "crescent": ("grid", V3_FINE),
    "dumbbell": ("grid", V3_COARSE),
}
V3_FAMILIES = ("stripes", "checks", "dots", "rings", "grid")
V3_COLOR_JITTER = 12.0  # std of an object's colours around the background's two
MIN_VISIBLE = 0.5  # an object keeps at least this fraction of its area visible
MIN_AREA = 24  # pixels


def class_groups(version: int) -> dict[str, list[str]]:
    """The two class groups of generator `version`."""
    return V3_CLASS_GROUPS if version >= 3 else CLASS_GROUPS


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


def _texture(
    rng: np.random.Generator, hw: tuple[int, int], colors: np.ndarray, kind: int | None = None
) -> np.ndarray:
    """A [h, w, 3] float texture mixing two colours with a pattern (`kind` 0-3, else drawn)."""
    h, w = hw
    kind = int(rng.integers(4)) if kind is None else kind
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
        else:  # a blob, like no class
            points = _blob(rng, size, lambda k: size * rng.uniform(0.02, 0.08, k))
            cv2.fillPoly(canvas, [points], color)
    return canvas


def _blob(rng: np.random.Generator, size: int, radii: Callable[[int], np.ndarray]) -> np.ndarray:
    """An irregular polygon (int32 points) around a random point of the image: 5-8 vertices at
    sorted random angles, `radii(k)` px from the point."""
    k = int(rng.integers(5, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, k))
    r = radii(k)
    center = rng.uniform(0, size, 2)
    return np.round(center + np.stack([r * np.cos(angles), r * np.sin(angles)], 1)).astype(np.int32)


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
    if version >= 3:
        return _render_v3(rng, image_size, max_objects)
    hw = (image_size, image_size)
    bg_colors = rng.uniform(30, 225, (2, 3))
    image = _texture(rng, hw, bg_colors)
    if version >= 2:
        image = _clutter(rng, image, bg_colors.mean(0))

    objects = _place_objects(rng, image_size, max_objects, lambda _: image_size * rng.uniform(0.07, 0.24))
    annotations = []
    for cls, visible, full_area, full in objects:
        if version >= 2:
            image = _paint_in_parts(rng, image, full, visible, bg_colors)
        else:
            texture = _texture(rng, hw, _object_colors(rng, bg_colors.mean(0)))
            image = np.where(visible[..., None], texture, image)
        annotations.append(_annotation(cls, visible, full_area))
    image = image + rng.normal(0, 6, image.shape)
    return image.clip(0, 255).round().astype(np.uint8), annotations


def _render_v3(
    rng: np.random.Generator, image_size: int, max_objects: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Version 3: one palette per image; objects told from the background by their pattern alone.

    The background is a smooth mix (blotches or a gradient) of two colours; every object is a fine
    pattern of the same two colours, jittered a little, in its class's family and period band
    (`V3_CLASS_PATTERNS`). A colour model fitted in a box (GrabCut) sees the same colours inside and
    out, while the change of texture marks the object for a detector. Unannotated patches in any
    family and period lie on the background, so that "patterned" does not mean "object": a mask
    must know the class's pattern or the shape. Sizes are version 1's, plus, in
    a share of the images, a large object first (behind the others), so that COCO's large area range
    occurs too."""
    hw = (image_size, image_size)
    bg_colors = rng.uniform(30, 225, (2, 3))
    image = _texture(rng, hw, bg_colors, int(rng.integers(2, 4)))  # smooth: blotches or a gradient
    for _ in range(int(rng.integers(*V3_CLUTTER))):  # unannotated patches in the objects' patterns
        points = _blob(
            rng, image_size, lambda k: image_size * rng.uniform(*V3_HALF_EXTENT) * rng.uniform(0.5, 1, k)
        )
        patch = cv2.fillPoly(np.zeros(hw, np.uint8), [points], 1).astype(bool)
        image = np.where(patch[..., None], _v3_patch_pattern(rng, hw, bg_colors), image)
    # Now and then a large object first, behind the others (a later object may hide only part of an
    # earlier one, so a large one drawn late would rarely find room).
    large = rng.random() < V3_LARGE_SHARE

    def half_extent(placed: int) -> float:
        low, high = V3_LARGE_HALF_EXTENT if large and placed == 0 else V3_HALF_EXTENT
        return image_size * rng.uniform(low, high)

    def center(placed: int) -> tuple[float, float]:  # a large object mostly inside the image
        return (0.3, 0.7) if large and placed == 0 else (0.1, 0.9)

    objects = _place_objects(rng, image_size, max_objects, half_extent, center)
    annotations = []
    for cls, visible, full_area, _ in objects:
        pattern = _v3_pattern(rng, hw, bg_colors, *V3_CLASS_PATTERNS[CLASSES[cls]])
        image = np.where(visible[..., None], pattern, image)
        annotations.append(_annotation(cls, visible, full_area))
    image = image + rng.normal(0, 6, image.shape)
    return image.clip(0, 255).round().astype(np.uint8), annotations


def _v3_pattern(
    rng: np.random.Generator,
    hw: tuple[int, int],
    bg_colors: np.ndarray,
    family: str,
    period: tuple[float, float],
) -> np.ndarray:
    """Version 3: a pattern of `family` (`V3_FAMILIES`), its period drawn from `period` (px) and its
    orientation at random, in the background's two colours, jittered."""
    colors = (bg_colors[rng.permutation(2)] + rng.normal(0, V3_COLOR_JITTER, (2, 3))).clip(0, 255)
    p, theta = rng.uniform(*period), rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float32)
    u = (xx * np.cos(theta) + yy * np.sin(theta)) / p  # coordinates in periods, rotated
    v = (-xx * np.sin(theta) + yy * np.cos(theta)) / p
    if family == "stripes":
        t = 0.5 + 0.5 * np.sin(2 * np.pi * u)
    elif family == "checks":
        t = (np.floor(u) + np.floor(v)) % 2
    elif family == "dots":  # a disc of radius 0.3 periods at each lattice point
        t = (u - np.round(u)) ** 2 + (v - np.round(v)) ** 2 < 0.09
    elif family == "rings":  # concentric about a random point
        cy, cx = rng.uniform(0, hw[0]), rng.uniform(0, hw[1])
        t = 0.5 + 0.5 * np.sin(2 * np.pi * np.hypot(xx - cx, yy - cy) / p)
    else:  # grid: thin lines along both axes
        t = (np.abs(u - np.round(u)) < 0.15) | (np.abs(v - np.round(v)) < 0.15)
    t = t.astype(np.float32)
    return colors[0] + t[..., None] * (colors[1] - colors[0])


def _v3_patch_pattern(rng: np.random.Generator, hw: tuple[int, int], bg_colors: np.ndarray) -> np.ndarray:
    """Version 3: an unannotated patch's pattern, any family at any period of the classes'."""
    family = V3_FAMILIES[int(rng.integers(len(V3_FAMILIES)))]
    return _v3_pattern(rng, hw, bg_colors, family, (V3_FINE[0], V3_COARSE[1]))


Placed = tuple[int, np.ndarray, int, np.ndarray]  # (class, visible mask, full area, full mask)


def _place_objects(
    rng: np.random.Generator,
    image_size: int,
    max_objects: int,
    half_extent: Callable[[int], float],
    center: Callable[[int], tuple[float, float]] = lambda placed: (0.1, 0.9),
) -> list[Placed]:
    """1..max_objects objects painted in order; a later one may hide at most part of an earlier one.
    An attempt to place object k (0-based) draws its size (px) from `half_extent(k)` and its centre
    uniformly in `center(k)` (fractions of the image size)."""
    hw = (image_size, image_size)
    wanted = int(rng.integers(1, max_objects + 1))
    objects: list[Placed] = []
    for _ in range(wanted * 8):
        if len(objects) == wanted:
            break
        cls = int(rng.integers(len(CLASSES)))
        size = half_extent(len(objects))
        low, high = center(len(objects))
        middle = rng.uniform(low * image_size, high * image_size, 2)
        full = _rasterize(CLASSES[cls], middle, size, rng.uniform(0.6, 1.6), rng.uniform(0, 2 * np.pi), hw)
        full = full.astype(bool)
        area = int(full.sum())
        if area < MIN_AREA:
            continue
        left = [int((visible & ~full).sum()) for _, visible, _, _ in objects]
        if any(n < max(MIN_VISIBLE * a, MIN_AREA) for n, (_, _, a, _) in zip(left, objects, strict=True)):
            continue  # would hide too much of an earlier object: try another placement
        objects = [(c, visible & ~full, a, f) for c, visible, a, f in objects] + [(cls, full, area, full)]
    return objects


def _annotation(cls: int, visible: np.ndarray, full_area: int) -> dict[str, Any]:
    rle = mask_to_rle(visible)
    return {
        "category_id": cls + 1,
        "segmentation": rle,
        "area": rle_area(rle),
        "full_area": full_area,  # before occlusion
        "bbox": rle_bbox(rle),
        "iscrowd": 0,
    }
