"""Checks before any run starts: the data, the weights and the output folders of every run to do.

A run that would fail in its first minute for want of a file should not start, record a FAILED
run in MLflow, or take a Slurm slot: `preflight` finds every such problem of a plan at once and
raises one `PreflightError` naming each path and its fix, before anything is recorded.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.suite import RunSpec
from harness.tracking import sqlite_path
from shapeprop.data import catalog, source
from shapeprop.data.records import DataError
from shapeprop.models.recipes import SYNTHETIC_PRETRAINED

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".pkl")


@dataclass(frozen=True)
class Problem:
    """One reason the plan cannot start: where, what is wrong, and how to fix it."""

    where: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}\n      fix: {self.fix}"


class PreflightError(RuntimeError):
    """Every problem found before the runs start; nothing was run or recorded."""

    def __init__(self, problems: list[Problem], profile: str | None = None):
        self.problems = problems
        lines = [f"{len(problems)} problem(s) found before starting; nothing was run or recorded in MLflow:"]
        lines += [f"  - {p}" for p in problems]
        if profile and profile != "mini" and any(p.where.startswith("data ") for p in problems):
            lines.append(
                "  To try the suite without the datasets: --profile mini (the synthetic stand-in, on a CPU)."
            )
        super().__init__("\n".join(lines))


def _readable(path: Path) -> str | None:
    """Why `path` (a file or a folder) cannot be read, or None when it can."""
    try:
        if path.is_dir():
            with os.scandir(path):
                return None
        with path.open("rb") as handle:
            handle.read(1)
        return None
    except FileNotFoundError:
        return "does not exist"
    except OSError as err:
        return f"cannot be opened: {err.strerror or err}"


def data_problems(specs: Iterable[RunSpec]) -> list[Problem]:
    """The dataset roots, annotation files and image folders the runs read (each checked once)."""
    problems: list[Problem] = []
    seen: set[tuple] = set()
    for spec in specs:
        data = spec.config.data
        files = data.model_dump_json(include={"files"}) if data.files else None
        for split in (data.train_split, data.test_split):
            key = (data.dataset, data.root, files, split, tuple(sorted(data.options.items())))
            if key in seen or (data.dataset, data.root, files) in seen:
                continue
            seen.add(key)
            where = f"data {data.dataset}/{split}"
            try:
                needs = source.data_requirements(data, split)
            except DataError as err:
                seen.add((data.dataset, data.root, files))  # one message per dataset, not per split
                fix = (
                    "set $SHAPEPROP_DATA to the folder that holds the datasets, or --set data.root=<folder>; "
                    f"then shapeprop-bench data verify {data.dataset} --root <its folder>"
                )
                problems.append(Problem(f"data {data.dataset}", err.problem, fix))
                continue
            for need in needs:
                reasons = [(path, _readable(path)) for path in need.paths]
                if any(reason is None for _, reason in reasons):
                    continue
                path, reason = reasons[0]
                others = [str(p) for p, _ in reasons[1:]]
                also = f" (nor {', '.join(others)})" if others else ""
                problems.append(
                    Problem(f"{where}: {need.what} {path}", f"{reason}{also}", _data_fix(spec, split))
                )
    return problems


def _data_fix(spec: RunSpec, split: str) -> str:
    data = spec.config.data
    if data.files:  # a dataset given by its files, in the suite's `datasets:` section or data.files
        return (
            f"correct data.files.{split} (the suite's datasets: {data.dataset}: section, paths relative to "
            f"the suite file), then shapeprop-bench data verify {data.dataset} --suite <the suite file>"
        )
    root = catalog.resolve_root(data.dataset, data.root)
    fix = f"shapeprop-bench data verify {data.dataset} --root {root} --split {split}"
    if data.root is None:
        fix += " (the default root under $SHAPEPROP_DATA; --set data.root=<folder> if it is elsewhere)"
    return fix


def weights_problems(specs: Iterable[RunSpec]) -> list[Problem]:
    """Weights named by a file path must exist; torchvision names and the library's own are made
    or downloaded by the run."""
    problems: list[Problem] = []
    for weights in sorted({s.config.model.weights for s in specs if s.config.model.weights}):
        if weights == SYNTHETIC_PRETRAINED:  # made by the library on first use
            continue
        path = Path(weights).expanduser()
        if path.suffix in CHECKPOINT_SUFFIXES or os.sep in weights:
            reason = _readable(path)
            if reason is not None:
                problems.append(
                    Problem(
                        f"model.weights {path}",
                        reason,
                        "point model.weights at a local checkpoint (--set model.weights=<file>), "
                        "or use a torchvision weight name such as ResNet50_Weights.IMAGENET1K_V1",
                    )
                )
    return problems


def _writable(folder: Path) -> str | None:
    """Why files cannot be created in `folder` (made if missing), or None when they can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as err:
        return f"cannot write there: {err.strerror or err}"


def output_problems(runs_root: str | Path, tracking_uri: str) -> list[Problem]:
    """The runs' work-directory root and a local MLflow store's folder must be writable."""
    folders = {Path(runs_root): ("the runs' work directories", "pass --runs-dir <a writable folder>")}
    store = sqlite_path(tracking_uri)
    if store is None and tracking_uri.startswith("file:"):
        store = Path(tracking_uri.removeprefix("file://").removeprefix("file:")) / "x"
    if store is not None:
        folders[store.parent] = ("the MLflow store", "pass --tracking-uri <a store in a writable folder>")
    problems = []
    for folder, (what, fix) in folders.items():
        reason = _writable(folder)
        if reason is not None:
            problems.append(Problem(f"{what} {folder}", reason, fix))
    return problems


def preflight(
    specs: list[RunSpec], runs_root: str | Path, tracking_uri: str, profile: str | None = None
) -> None:
    """Raise `PreflightError` listing every problem that would stop `specs` from running."""
    problems = data_problems(specs) + weights_problems(specs) + output_problems(runs_root, tracking_uri)
    if problems:
        raise PreflightError(problems, profile)
