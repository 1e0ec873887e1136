"""Records -> training / evaluation batches for the torchvision-style model adapters.

An item is `(image, target)`: `image` float32 [3, H, W] in [0, 1], resized so the short side is
`min_size` unless the long side would then exceed `max_size`; `target` holds `boxes` (float32
[n, 4], XYXY in resized pixels), `labels` (int64 [n], category_id + 1; 0 is background), `masks`
(uint8 [n, H, W], zeros where `has_mask` is False), `has_mask` (bool [n]), `image_id`,
`orig_size` (h, w) and `scale`. Crowd annotations are left out (evaluation reads the records).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch.utils.data import DataLoader, Sampler, SequentialSampler

from shapeprop.config import DataConfig
from shapeprop.data.masks import annotation_to_mask
from shapeprop.data.records import DataError, MissingDataError


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int, float]:
    """(new_h, new_w, scale): short side to min_size, unless the long side would pass max_size."""
    scale = min_size / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale)), scale


def _read_image(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError as exc:
        raise MissingDataError("image not found", path) from exc
    except OSError as exc:
        raise DataError(f"unreadable image: {exc}", path) from exc


def _mask(ann: dict[str, Any], height: int, width: int, new_h: int, new_w: int) -> np.ndarray:
    """The annotation's mask rasterised at the resized resolution."""
    segm = ann["segmentation"]
    if isinstance(segm, list):  # polygons: scale the vertices, rasterise once at the target size
        sy, sx = new_h / height, new_w / width
        polygons = [[v * (sx if i % 2 == 0 else sy) for i, v in enumerate(p)] for p in segm if len(p) >= 6]
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, new_h, new_w)))
    mask = annotation_to_mask(ann, height, width)
    if (new_h, new_w) == (height, width):
        return mask
    # the image's own filter (PIL bilinear), thresholded at one half
    resized = Image.fromarray(mask * 255).resize((new_w, new_h), Image.BILINEAR)
    return (np.asarray(resized) >= 128).astype(np.uint8)


class DetectionDataset(torch.utils.data.Dataset):
    """Decodes, resizes and (in training, with `hflip`) flips records into model inputs.

    An index may be an int or an `(int, flip)` pair; `make_loader`'s training sampler passes pairs so
    flips are seeded by the loader's generator whatever the number of workers. Given a plain int
    in training, the flip is drawn from torch's (per-worker) RNG.
    """

    def __init__(self, records: list[dict[str, Any]], min_size: int, max_size: int, hflip: bool, train: bool):
        self.records = records
        self.min_size, self.max_size = min_size, max_size
        self.hflip, self.train = hflip, train

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int | tuple[int, bool]) -> tuple[torch.Tensor, dict[str, Any]]:
        if isinstance(index, tuple):
            index, flip = index
        else:
            flip = bool(torch.rand(()) < 0.5)
        flip = flip and self.train and self.hflip
        record = self.records[index]
        height, width = record["height"], record["width"]
        image = _read_image(record["file_name"])
        if image.size != (width, height):
            raise DataError(
                f"image is {image.size[0]}x{image.size[1]} but its record says {width}x{height}",
                record["file_name"],
                "width/height",
            )
        new_h, new_w, scale = resized_shape(height, width, self.min_size, self.max_size)
        if (new_h, new_w) != (height, width):
            image = image.resize((new_w, new_h), Image.BILINEAR)
        # per-item work in numpy: small torch ops pay a large thread-pool overhead on busy CPUs
        pixels = np.asarray(image).transpose(2, 0, 1).astype(np.float32)
        np.divide(pixels, 255, out=pixels)

        anns = [a for a in record["annotations"] if not a.get("iscrowd")]
        sx, sy = new_w / width, new_h / height
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes *= np.array([sx, sy, sx, sy], dtype=np.float32)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, new_w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, new_h)
        # torchvision's detectors reject boxes without positive extent
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        anns = [a for a, k in zip(anns, keep.tolist(), strict=True) if k]
        boxes = boxes[keep]
        has_mask = np.array([bool(a["has_mask"]) for a in anns], dtype=bool)
        masks = np.zeros((len(anns), new_h, new_w), dtype=np.uint8)
        for i, ann in enumerate(anns):
            if ann["has_mask"]:
                masks[i] = _mask(ann, height, width, new_h, new_w)
        if flip:
            pixels = pixels[:, :, ::-1]
            masks = masks[:, :, ::-1]
            boxes = np.stack([new_w - boxes[:, 2], boxes[:, 1], new_w - boxes[:, 0], boxes[:, 3]], 1)
        pixels = torch.from_numpy(np.ascontiguousarray(pixels))
        masks = torch.from_numpy(np.ascontiguousarray(masks))
        boxes = torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32))
        has_mask = torch.from_numpy(has_mask)
        target = {
            "boxes": boxes,
            "labels": torch.tensor([a["category_id"] + 1 for a in anns], dtype=torch.int64),
            "masks": masks,
            "has_mask": has_mask,
            "image_id": record["image_id"],
            "orig_size": (height, width),
            "scale": scale,
        }
        return pixels, target


def collate(
    batch: list[tuple[torch.Tensor, dict[str, Any]]],
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Batch of (image, target) -> (list of images, list of targets); images keep their own sizes."""
    return [image for image, _ in batch], [target for _, target in batch]


class FlipShuffleSampler(Sampler):
    """Seeded shuffled indices, each paired with a seeded flip decision; a new draw every epoch."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, bool]]:
        order = torch.randperm(self.size, generator=self.generator).tolist()
        flips = (torch.rand(self.size, generator=self.generator) < 0.5).tolist()
        return iter(zip(order, flips, strict=True))


def make_loader(
    records: list[dict[str, Any]], data_cfg: DataConfig, train: bool, batch_size: int, seed: int
) -> DataLoader:
    """A DataLoader with `data_cfg.num_workers` workers.

    Training: seeded shuffling and flips (the same seed gives the same batches), last partial
    batch dropped. Evaluation: records in order, no flip, every image.
    """
    if not records:
        raise DataError("no records to load", key="records")
    dataset = DetectionDataset(records, data_cfg.min_size, data_cfg.max_size, data_cfg.hflip, train)
    sampler: Sampler = FlipShuffleSampler(len(records), seed) if train else SequentialSampler(dataset)
    workers = data_cfg.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=train and len(records) >= batch_size,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),  # seeds the workers' RNGs
    )
