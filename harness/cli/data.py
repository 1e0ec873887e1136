"""`shapeprop-bench data ...`: generate the synthetic set, print dataset statistics, verify a root.

The `data` group of `shapeprop-bench`; also runnable as `python -m harness.cli.data`.
Exit codes: 0 success, 1 a dataset problem (verify found problems, or data could not be loaded),
2 a usage error.
"""

from __future__ import annotations

import json
from typing import Any

import click
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from shapeprop.config import DataConfig


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--option")
        options[key] = yaml.safe_load(value) if value else ""
    return options


def _own_dataset(dataset: str, suite: str | None) -> dict[str, Any]:
    """`files` and `class_groups` of DATASET when the suite file `suite` defines it (its `datasets:`
    section), else nothing: DATASET is then a registered name."""
    if suite is None:
        return {}
    from harness.suite import SuiteError, load_suite

    try:
        entry = load_suite(suite).datasets.get(dataset)
    except SuiteError as err:
        raise click.UsageError(str(err)) from None
    return {} if entry is None else entry.model_dump(mode="json")


def _data_config(
    dataset: str, own: dict[str, Any], root: str | None, split: str, options: tuple[str, ...], **extra: Any
) -> DataConfig:
    """The data config the command reads: DATASET (with the suite's files, `own`) at `split`."""
    try:
        return DataConfig(
            dataset=dataset,
            **own,
            root=root,
            train_split=split,
            test_split=split,
            options=_parse_options(options),
            **extra,
        )
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from exc


_SUITE_OPTION = click.option(
    "--suite",
    type=click.Path(dir_okay=False, exists=True),
    help="a suite file whose `datasets:` section defines DATASET (a COCO-format dataset of your own); "
    "its plugins are loaded too",
)


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    raise SystemExit(1)


@click.group(name="data", context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Datasets: generate the synthetic set, print statistics under a split, verify a root."""


@data.command()
@click.option("--root", type=click.Path(file_okay=False), help="output directory (default: the cache dir)")
@click.option("--split", "splits", multiple=True, default=("train", "val"), show_default=True)
@click.option(
    "--num-images", type=click.IntRange(min=1), help="images per split (default 400 train / 100 val)"
)
@click.option("--image-size", type=click.IntRange(min=32), default=128, show_default=True)
@click.option("--max-objects", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def generate(root, splits, num_images, image_size, max_objects, seed) -> None:
    """Generate (or find in the cache) the synthetic dataset and print where it is."""
    from shapeprop.data import DataError, catalog

    for split in splits:
        try:
            dataset = catalog.load(
                "synthetic",
                root,
                split,
                num_images=num_images,
                image_size=image_size,
                seed=seed,
                max_objects=max_objects,
            )
        except DataError as exc:
            _fail(exc)
        boxes = sum(len(r["annotations"]) for r in dataset.records)
        click.echo(f"{split}: {len(dataset.records)} images, {boxes} objects in {dataset.metadata.root}")


@data.command()
@click.argument("dataset")
@click.option("--root", help="dataset root (default: $SHAPEPROP_DATA/..., or the cache for synthetic)")
@click.option("--split", default="train", show_default=True)
@click.option(
    "--option", "options", multiple=True, metavar="KEY=VALUE", help="loader option, e.g. num_images=64"
)
@click.option(
    "--masks",
    "kind",
    type=click.Choice(["all", "categories", "images", "image_fraction"]),
    default="all",
    show_default=True,
    help="mask supervision kind",
)
@click.option("--classes", help="kind=categories: a class group (voc, nonvoc) or comma-separated class names")
@click.option("--image-ids", help="kind=images: comma-separated image ids")
@click.option("--fraction", type=float, help="kind=image_fraction: fraction of images with masks")
@click.option("--data-fraction", type=float, default=1.0, show_default=True)
@click.option("--split-seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@_SUITE_OPTION
def stats(
    dataset,
    root,
    split,
    options,
    kind,
    classes,
    image_ids,
    fraction,
    data_fraction,
    split_seed,
    as_json,
    suite,
) -> None:
    """Images, boxes and boxes with masks of DATASET under a split, overall and per class."""
    from shapeprop.data import DataError
    from shapeprop.data.splits import prepare_training_records
    from shapeprop.data.stats import dataset_stats

    masks: dict[str, Any] = {"kind": kind}
    if classes is not None:
        names = [c.strip() for c in classes.split(",") if c.strip()]
        masks["classes"] = names[0] if len(names) == 1 else names
    if image_ids is not None:
        masks["image_ids"] = [
            int(i) if i.strip().isdigit() else i.strip() for i in image_ids.split(",") if i.strip()
        ]
    if fraction is not None:
        masks["fraction"] = fraction
    own = _own_dataset(dataset, suite)
    cfg = _data_config(
        dataset, own, root, split, options, masks=masks, data_fraction=data_fraction, split_seed=split_seed
    )
    try:
        records, metadata, fingerprint = prepare_training_records(cfg)
    except DataError as exc:
        _fail(exc)
    counts = dataset_stats(records, metadata)
    if as_json:
        out = {"dataset": dataset, "split": split, "fingerprint": fingerprint, **counts.as_dict()}
        click.echo(json.dumps(out, indent=2))
        return
    console = Console()
    console.print(
        f"[bold]{dataset}[/] {split} at {metadata.root}: {counts.images} images "
        f"({counts.images_with_masks} with masks), {counts.boxes} boxes, {counts.masks} with masks, "
        f"{counts.crowd} crowd regions"
    )
    console.print(f"annotations {metadata.fingerprint[:16]}  split {fingerprint[:16]}")
    table = Table("class", "group", "boxes", "with masks", "crowd")
    group_of = {c: g for g, members in metadata.class_groups.items() for c in members}
    for name, c in counts.per_class.items():
        table.add_row(name, group_of.get(name, ""), str(c.boxes), str(c.masks), str(c.crowd))
    console.print(table)


@data.command()
@click.argument("dataset")
@click.option("--root", help="dataset root")
@click.option(
    "--split",
    "splits",
    multiple=True,
    help="split to check (repeatable; default: train and val, or every split the --suite dataset has files for)",
)
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="loader option")
@click.option("--decode", is_flag=True, help="decode every image fully (finds truncated files; slower)")
@click.option("--max-problems", type=click.IntRange(min=1), default=50, show_default=True)
@_SUITE_OPTION
def verify(dataset, root, splits, options, decode, max_problems, suite) -> None:
    """Check DATASET at --root (or as --suite defines it): annotations load, images exist and read,
    boxes and masks are sane.

    Exits 1 if any problem is found.
    """
    from shapeprop.data.verify import verify_dataset

    own = _own_dataset(dataset, suite)
    if not splits:
        splits = tuple(own["files"]) if own else ("train", "val")
    failed = False
    for split in splits:
        data = _data_config(dataset, own, root, split, options)
        report = verify_dataset(data, split, decode_images=decode)
        status = "ok" if report.ok else f"{len(report.problems)} problem(s)"
        click.echo(f"{dataset} {split}: {report.images} images, {report.annotations} annotations: {status}")
        for problem in report.problems[:max_problems]:
            click.echo(f"  {problem}")
        if len(report.problems) > max_problems:
            click.echo(f"  ... and {len(report.problems) - max_problems} more")
        failed |= not report.ok
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    data()
