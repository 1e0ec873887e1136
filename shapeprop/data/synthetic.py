"""A synthetic instance-segmentation benchmark, generated from a seed and cached in COCO format.

What the images hold (the shape classes, their two groups, the generator versions) is
`shapeprop.data.synthetic_render`; this module writes splits, caches them and loads them.

Image `i` of a split depends only on (seed, split, i, image_size, max_objects, version), so a
larger `num_images` extends a set without changing the images it already had. Version 1 stays the
default, and versions 1 and 2 render byte for byte what they always rendered.

Layout (also the cache layout): `<root>/annotations/instances_{split}.json`, `<root>/{split}/*.png`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from shapeprop.data.coco import load_coco_json
from shapeprop.data.records import DataError, Dataset, read_json
from shapeprop.data.synthetic_render import CLASS_GROUPS, CLASSES, class_groups, render_image

__all__ = ["CLASSES", "CLASS_GROUPS", "load_synthetic", "render_image"]

GENERATOR_VERSION = 1  # the default; 2 and 3 are the harder variants (synthetic_render)
GENERATOR_VERSIONS = (1, 2, 3)
# Version 3 has more images: its detector must not be starved of boxes (issue 41).
DEFAULT_NUM_IMAGES = {
    1: {"train": 400, "val": 100, "test": 100},
    2: {"train": 400, "val": 100, "test": 100},
    3: {"train": 2000, "val": 1000, "test": 1000},
}
SPLITS = ("train", "val", "test")


def default_cache_dir() -> Path:
    """`$SHAPEPROP_DATA/synthetic`, else `~/.cache/shapeprop/synthetic`."""
    base = os.environ.get("SHAPEPROP_DATA")
    return Path(base) / "synthetic" if base else Path.home() / ".cache" / "shapeprop" / "synthetic"


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
                {"id": i + 1, "name": name, "supercategory": group}
                for i, name in enumerate(CLASSES)
                for group, names in class_groups(options["version"]).items()
                if name in names
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

    `num_images` defaults to `DEFAULT_NUM_IMAGES` of the version (versions 1 and 2: 400 for train
    and 100 otherwise; version 3: 2000 and 1000); `test_images`, when given, is the
    size of the val and test splits alone (a claim's image term shrinks with it, the training set
    stays as it is). `version` picks the generator (module docstring). `root` None = the cache dir
    keyed by the options. A `root` that already holds this split made with other options is an error.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}", key="split")
    if version not in GENERATOR_VERSIONS:
        raise DataError(
            f"unknown generator version {version!r}; expected one of {GENERATOR_VERSIONS}",
            key="options.version",
        )
    num_images = DEFAULT_NUM_IMAGES[version][split] if num_images is None else int(num_images)
    if test_images is not None and split != "train":
        num_images = int(test_images)
    for key, value, low in (
        ("num_images", num_images, 1),
        ("image_size", image_size, 32),
        ("max_objects", max_objects, 1),
    ):
        if int(value) < low:
            raise DataError(f"must be at least {low}, got {value}", key=f"options.{key}")
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
    dataset = load_coco_json(json_path, root / split, "synthetic", split, class_groups=class_groups(version))
    dataset.metadata.root = root
    return dataset


def file_digest(root: Path, split: str) -> str:
    """sha256 over a generated split's JSON and PNG bytes (for determinism checks)."""
    paths = sorted((root / split).iterdir()) + [root / "annotations" / f"instances_{split}.json"]
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()
