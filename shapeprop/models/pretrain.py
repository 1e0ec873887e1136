"""A stand-in for ImageNet pretraining of the tiny backbone: shape classification on object crops.

The paper's detectors start from an ImageNet-pretrained ResNet; the CPU miniatures use the tiny
backbone, which has no such weights, and a detector trained from scratch for a few hundred steps
barely learns to detect (box AP of a few points), which leaves nothing for a mask head to improve.
This module pretrains the tiny backbone as ImageNet pretrains a ResNet: image-level class labels
only (no masks), on images that no experiment trains or evaluates on (the synthetic generator's
`pretrain` split), and caches the weights. A config selects them with
`model.weights: synthetic-pretrained` (tiny backbone only; `shapeprop.models.recipes.SYNTHETIC_PRETRAINED`).
Like ImageNet for COCO, its images are not the benchmark's: version 1's, whatever version a suite runs.

    python -m shapeprop.models.pretrain   # trains once (a few minutes on 2 CPU cores), then cached
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import multiprocessing as mp
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shapeprop.data.synthetic import CLASSES, default_cache_dir, render_image
from shapeprop.files import atomic_path
from shapeprop.models.labels import label_to_class
from shapeprop.models.recipes import SYNTHETIC_PRETRAINED, recipe
from shapeprop.models.tiny import TINY_CHANNELS, TinyNet
from shapeprop.models.transform import IMAGE_MEAN, IMAGE_STD

SPLIT = "pretrain"  # a generator split disjoint from train / val / test
DEFAULTS = {
    "version": 1,
    "seed": 0,
    "num_images": 6000,
    "image_size": 128,
    "max_objects": 6,
    "crop": 32,
    "steps": 3000,
    "batch_size": 256,
    "lr": 0.1,
}


def _cache_dir() -> Path:
    """`pretrained/` beside the synthetic set's cache (`$SHAPEPROP_DATA`, else `~/.cache/shapeprop`)."""
    return default_cache_dir().parent / "pretrained"


def checkpoint_name(options: dict) -> str:
    digest = hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]
    return f"tiny-synthetic-{digest}.pt"


def _crops_of_images(options: dict, indices: range) -> tuple[list[np.ndarray], list[int]]:
    """The crops and class labels of images `indices` of the pretrain split (see `object_crops`)."""
    crops, labels = [], []
    size, c = options["image_size"], options["crop"]
    for index in indices:
        image, annotations = render_image(
            options["seed"], SPLIT, index, size, options["max_objects"], options["version"]
        )
        padded = cv2.copyMakeBorder(image, size, size, size, size, cv2.BORDER_REFLECT)
        for ann in annotations:
            x, y, w, h = ann["bbox"]
            side = 1.5 * max(w, h, 4.0)
            x0, y0 = x + w / 2 - side / 2 + size, y + h / 2 - side / 2 + size
            window = padded[int(round(y0)) : int(round(y0 + side)), int(round(x0)) : int(round(x0 + side))]
            crops.append(cv2.resize(window, (c, c), interpolation=cv2.INTER_AREA))
            labels.append(label_to_class(ann["category_id"]))
    return crops, labels


def object_crops(
    options: dict, processes: int | None = None, progress: bool = False, chunk: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Square crops (with context) around every object of the pretrain split: uint8 [N, c, c, 3], labels [N].

    The square's side is 1.5x the box's longer side, so objects appear at about the scale the
    detector sees them at in 128 px images. Images are rendered in `processes` processes (default:
    one per core) in chunks of `chunk`; the crops come in image order whatever the number.
    """
    from rich.progress import Progress

    n = options["num_images"]
    chunks = [range(start, min(start + chunk, n)) for start in range(0, n, chunk)]
    processes = min(processes or os.cpu_count() or 1, len(chunks))
    crops, labels = [], []
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(Progress(disable=not progress, transient=True))
        task = bar.add_task("render pretrain crops", total=n)
        if processes > 1:  # spawned: a forked copy of a process already running torch threads can hang
            pool = stack.enter_context(ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn")))
            results = pool.map(_crops_of_images, [options] * len(chunks), chunks)
        else:
            results = (_crops_of_images(options, indices) for indices in chunks)
        for indices, (chunk_crops, chunk_labels) in zip(chunks, results, strict=True):
            crops += chunk_crops
            labels += chunk_labels
            bar.advance(task, len(indices))
    return np.stack(crops), np.asarray(labels, dtype=np.int64)


def _to_tensor(crops: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class CropClassifier(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.body = TinyNet()
        self.fc = nn.Linear(TINY_CHANNELS[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean(dim=(2, 3)))


def pretrain(options: dict, progress: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Train the classifier; returns the backbone body's state dict and {train, held-out} accuracy."""
    from rich.progress import Progress, TextColumn

    crops, labels = object_crops(options, progress=progress)
    x, y = _to_tensor(crops), torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(options["seed"])
    order = torch.randperm(len(y), generator=generator)
    held = order[: max(1, len(y) // 10)]  # held-out crops, only to report accuracy
    train = order[len(held) :]
    torch.manual_seed(options["seed"])
    model = CropClassifier(len(CLASSES))
    optimizer = torch.optim.SGD(model.parameters(), lr=options["lr"], momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, options["lr"], total_steps=options["steps"])
    model.train()
    columns = [*Progress.get_default_columns(), TextColumn("loss {task.fields[loss]}")]
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("pretrain tiny backbone", total=options["steps"], loss="-")
        for _ in range(options["steps"]):
            idx = train[torch.randint(len(train), (options["batch_size"],), generator=generator)]
            batch = x[idx]
            flip = torch.rand(len(idx), generator=generator) < 0.5
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
            loss = F.cross_entropy(model(batch), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(task, advance=1, loss=f"{loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        accuracy = {
            name: (model(x[part]).argmax(1) == y[part]).float().mean().item()
            for name, part in (("train", train[: len(held)]), ("held_out", held))
        }
    return model.body.state_dict(), accuracy


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (parallel runs wait for one pretraining instead of racing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pretrained_tiny_weights(
    cache_dir: Path | None = None, progress: bool = True, **overrides: int | float
) -> Path:
    """The cached checkpoint of the pretrained tiny backbone, trained first if missing."""
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(
            f"pretrained_tiny_weights: unknown options {sorted(unknown)}; known: {sorted(DEFAULTS)}"
        )
    options = {**DEFAULTS, **overrides}
    path = Path(cache_dir or _cache_dir()) / checkpoint_name(options)
    if path.is_file():
        return path
    with _locked(path.with_suffix(".lock")):
        if path.is_file():  # another process trained it while this one waited
            return path
        state, accuracy = pretrain(options, progress)
        with atomic_path(path) as tmp:
            torch.save({"state_dict": state, "options": options, "accuracy": accuracy}, tmp)
    return path


def resolve_weights(backbone: str, weights: str | None) -> str | None:
    """`model.weights` as a backbone loads it: `SYNTHETIC_PRETRAINED` becomes the cached checkpoint's path
    (trained first if missing; only for a backbone whose recipe has synthetic pretraining), any
    other value is returned as it is."""
    if weights != SYNTHETIC_PRETRAINED:
        return weights
    if not recipe(backbone).synthetic_pretraining:
        raise ValueError(f"model.weights: {weights!r} exists only for the tiny backbone, not {backbone!r}")
    return str(pretrained_tiny_weights())


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache-dir", type=Path, default=None, help="default: $SHAPEPROP_DATA/pretrained")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    args = p.parse_args(argv)
    path = pretrained_tiny_weights(args.cache_dir, steps=args.steps)
    info = torch.load(path, map_location="cpu", weights_only=False)
    print(f"{path}\naccuracy: {info['accuracy']}")
    return path


if __name__ == "__main__":
    main()
