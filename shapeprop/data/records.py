"""The dataset container every loader returns, the data error type, and small shared helpers.

Records follow the detectron2 dataset-dict convention: one dict per image with `file_name`
(absolute path), `height`, `width`, `image_id` and `annotations`; each annotation has `bbox`
(XYWH, absolute pixels), `bbox_mode` (detectron2's `BoxMode.XYWH_ABS`, an int), `category_id`
(contiguous, 0-based: an index into `DatasetMetadata.classes`), `segmentation` (a list of polygons,
a COCO RLE dict, or None when the annotation has no mask), `iscrowd` and `has_mask`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# detectron2.structures.BoxMode.XYWH_ABS; an int so records need no detectron2 import.
BOX_MODE_XYWH_ABS = 1


class DataError(ValueError):
    """Bad dataset input; the message names the path, the key and the problem."""

    def __init__(self, problem: str, path: str | Path | None = None, key: str | None = None):
        self.problem, self.path, self.key = problem, path, key
        where = [str(p) for p in (path, key) if p is not None]
        super().__init__(": ".join([*where, problem]))


class MissingDataError(DataError, FileNotFoundError):
    """A dataset root, annotation file or image that does not exist."""


@dataclass
class DatasetMetadata:
    """What a loader knows about its dataset besides the records."""

    name: str
    classes: list[str]  # index = category_id
    class_groups: dict[str, list[str]] = field(default_factory=dict)
    fingerprint: str = ""  # sha256 of the annotation file contents
    root: Path = Path(".")
    split: str = "train"


@dataclass
class Dataset:
    """Records (detectron2 dataset dicts) and their metadata."""

    records: list[dict[str, Any]]
    metadata: DatasetMetadata

    def __len__(self) -> int:
        return len(self.records)


def require_dir(path: Path, what: str) -> Path:
    """Return `path` if it is a directory, else raise a MissingDataError naming it."""
    if not path.is_dir():
        raise MissingDataError(f"{what} not found (no such directory)", path)
    return path


def require_file(path: Path, what: str) -> Path:
    """Return `path` if it is a file, else raise a MissingDataError naming it."""
    if not path.is_file():
        raise MissingDataError(f"{what} not found (no such file)", path)
    return path


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing, empty, truncated or corrupt file raises DataError naming it."""
    require_file(path, "annotation file")
    text = path.read_bytes()
    if not text.strip():
        raise DataError("empty file, expected JSON", path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (the file looks truncated)" if exc.pos >= len(text.rstrip()) else ""
        raise DataError(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}{hint}", path
        ) from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text: {exc}", path) from exc


def hash_files(paths: Iterable[Path], root: Path | None = None) -> str:
    """sha256 over the names (relative to `root`) and contents of `paths`, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        name = path.relative_to(root) if root is not None else path.name
        digest.update(str(name).encode() + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def check_images_exist(records: list[dict[str, Any]], what: str) -> None:
    """Raise MissingDataError naming the missing image files, if any."""
    listed: dict[Path, set[str]] = {}
    missing = []
    for record in records:
        path = Path(record["file_name"])
        if path.parent not in listed:
            try:
                listed[path.parent] = {entry.name for entry in path.parent.iterdir()}
            except FileNotFoundError:
                listed[path.parent] = set()
        if path.name not in listed[path.parent]:
            missing.append(str(path))
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise MissingDataError(
            f"{len(missing)} image(s) listed in {what} do not exist: {', '.join(missing[:3])}{more}",
            missing[0],
        )


def class_index(classes: list[str]) -> dict[str, int]:
    """Map class name -> contiguous category_id."""
    return {name: i for i, name in enumerate(classes)}


@dataclass(frozen=True)
class Requirement:
    """A file or folder a dataset's loader reads: any one of `paths` (layouts differ between releases)."""

    what: str
    paths: tuple[Path, ...]
