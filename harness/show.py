"""`shapeprop-bench show`: qualitative figures of finished runs (paper Figs. 2, 7, 8).

A run is named by its MLflow run id, or by suite + row + seed (+ profile). Its resolved config
comes from the run's `config.yaml` artifact (else its work directory) and its weights from the
`checkpoints/last.ckpt` artifact (runs made with `run --log-checkpoint`), else from
`<runs dir>/<suite>/<run key>/checkpoints/last.ckpt`. The command picks images of the run's
evaluation split (seeded, or by id), runs the trained model on them, writes PNGs under
`<out>/qualitative/` and logs them to the run in MLflow (artifact folder `qualitative/`):

- per run and image: one row per detection: crop with box, instance saliency, shape activation,
  predicted mask, ground-truth mask (`shapeprop.visualize.render_detections`);
- with two runs: their predicted masks side by side on the same images (Fig. 7), logged to both.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from harness import tracking
from harness.cli import parse_set, set_option
from harness.suite import param_value

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from shapeprop.config import ExperimentConfig

ARTIFACT_DIR = "qualitative"
CHECKPOINT_ARTIFACT = "checkpoints/last.ckpt"
COMPARISON_DETECTIONS = 10  # detections drawn per image and model in the side-by-side figure


class ShowError(click.ClickException):
    """A run that cannot be shown (missing, not a run of a spec, no checkpoint, ...)."""


@dataclass
class ShownRun:
    """A run to show: its MLflow run, resolved config, checkpoint and a label for titles and files."""

    run: Run
    config: ExperimentConfig
    checkpoint: Path
    checkpoint_source: str

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def tags(self) -> dict[str, str]:
        return self.run.data.tags

    @property
    def label(self) -> str:
        return self.tags.get("row") or self.tags.get("mlflow.runName") or self.run_id[:8]

    @property
    def slug(self) -> str:
        return f"{_slug(self.label)}-seed{self.tags.get('seed', '?')}-{self.run_id[:8]}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "run"


# --------------------------------------------------------------------------- finding runs


def get_run(client: MlflowClient, run_id: str, uri: str) -> Run:
    """The MLflow run `run_id`; a clear error if the store has none of that id."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as err:
        if getattr(err, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ShowError(f"no MLflow run with id {run_id!r} in {uri}") from None
        raise ShowError(f"cannot read MLflow run {run_id!r} from {uri}: {err}") from None


def _suite_name(suite: str) -> str:
    """A suite name, or the name inside a suite YAML file given by path."""
    path = Path(suite)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        from harness.suite import SuiteError, load_suite

        try:
            return load_suite(path).name
        except SuiteError as err:
            raise ShowError(str(err)) from None
    return suite


def _child_runs(client: MlflowClient, experiment_id: str) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string="tags.kind = 'run'",
            max_results=5000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _choose(values: set[str], what: str, context: str) -> str:
    if len(values) == 1:
        return next(iter(values))
    raise ShowError(f"{context} has runs of several {what}s ({', '.join(sorted(values))}); pass --{what}")


def find_suite_run(
    client: MlflowClient,
    uri: str,
    suite: str,
    row: str,
    seed: int | None,
    profile: str | None,
    overrides: dict[str, Any] | None = None,
) -> Run:
    """The newest FINISHED run of `row` in `suite` with `seed` and `profile` (each may be left out
    when the store holds only one) whose config has `overrides` (`--set` values)."""
    name = _suite_name(suite)
    experiment = client.get_experiment_by_name(tracking.experiment_name(name))
    if experiment is None:
        known = sorted(
            e.name.removeprefix(tracking.EXPERIMENT_PREFIX)
            for e in client.search_experiments()
            if e.name.startswith(tracking.EXPERIMENT_PREFIX)
        )
        raise ShowError(f"no runs of suite {name!r} in {uri} (suites there: {', '.join(known) or 'none'})")
    runs = _child_runs(client, experiment.experiment_id)
    rows = {r.data.tags.get("row", "") for r in runs}
    if row not in rows:
        folded = [r for r in rows if r.lower() == row.lower()]
        if len(folded) != 1:
            listed = ", ".join(repr(r) for r in sorted(rows))
            raise ShowError(f"suite {name!r} has no row {row!r}; its rows: {listed}")
        row = folded[0]
    runs = [r for r in runs if r.data.tags.get("row") == row]
    context = f"row {row!r} of suite {name!r}"
    if overrides:
        runs = [r for r in runs if all(r.data.params.get(k) == param_value(v) for k, v in overrides.items())]
        context += " with " + " ".join(f"{k}={v}" for k, v in overrides.items())
        if not runs:
            raise ShowError(f"{context}: no run")
    if profile is None:
        profile = _choose({r.data.tags.get("profile", "") for r in runs}, "profile", context)
    runs = [r for r in runs if r.data.tags.get("profile") == profile]
    if not runs:
        raise ShowError(f"{context} has no run of profile {profile!r}")
    if seed is None:
        seed = int(_choose({r.data.tags.get("seed", "") for r in runs}, "seed", context))
    runs = [r for r in runs if r.data.tags.get("seed") == str(seed)]
    if not runs:
        raise ShowError(f"{context} has no run with seed {seed} (profile {profile!r})")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    if not finished:
        states = ", ".join(sorted({r.info.status for r in runs}))
        raise ShowError(f"{context}, seed {seed}, profile {profile!r} has no FINISHED run (only {states})")
    return finished[0]  # newest first


# --------------------------------------------------------------------------- config and checkpoint


def _workdir(run: Run, runs_dir: Path) -> Path | None:
    tags = run.data.tags
    if not tags.get("suite") or not tags.get("run_key"):
        return None
    return runs_dir / tags["suite"] / tags["run_key"]


def _artifact(client: MlflowClient, run_id: str, path: str, dst: Path) -> Path | None:
    """Download artifact `path` of the run into `dst`, or None if the run has no such artifact."""
    parent = str(Path(path).parent) if "/" in path else None
    try:
        names = {a.path for a in client.list_artifacts(run_id, parent)}
    except Exception:  # an unreachable artifact store reads as "not there"; the fallback explains
        return None
    if path not in names:
        return None
    dst.mkdir(parents=True, exist_ok=True)
    with _quiet_downloads():
        return Path(client.download_artifacts(run_id, path, str(dst)))


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No MLflow download progress bars (they garble the command's output)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def load_config(client: MlflowClient, run: Run, runs_dir: Path, scratch: Path) -> ExperimentConfig:
    """The run's resolved config: its `config.yaml` artifact, else `<work dir>/config.yaml`."""
    import yaml
    from pydantic import ValidationError

    from shapeprop.config import ExperimentConfig

    path = _artifact(client, run.info.run_id, "config.yaml", scratch / run.info.run_id)
    workdir = _workdir(run, runs_dir)
    if path is None and workdir is not None and (workdir / "config.yaml").is_file():
        path = workdir / "config.yaml"
    if path is None:
        where = f" nor at {workdir / 'config.yaml'}" if workdir is not None else ""
        raise ShowError(
            f"run {run.info.run_id} has no config: no config.yaml artifact{where} "
            "(is it a run made by `shapeprop-bench run`? pass --runs-dir if its work directory moved)"
        )
    try:
        return ExperimentConfig.model_validate(yaml.safe_load(path.read_text()))
    except (yaml.YAMLError, ValidationError) as err:
        raise ShowError(f"{path}: not a valid experiment config: {err}") from None


def find_checkpoint(client: MlflowClient, run: Run, runs_dir: Path, scratch: Path) -> tuple[Path, str]:
    """(checkpoint path, where it came from): the `checkpoints/last.ckpt` artifact, else the work
    directory's `checkpoints/last.ckpt`. Warns when the work directory now belongs to another run."""
    run_id = run.info.run_id
    path = _artifact(client, run_id, CHECKPOINT_ARTIFACT, scratch / run_id)
    if path is not None:
        return path, f"MLflow artifact {CHECKPOINT_ARTIFACT}"
    workdir = _workdir(run, runs_dir)
    local = workdir / "checkpoints" / "last.ckpt" if workdir is not None else None
    if local is None or not local.is_file():
        where = f" and there is no {local}" if local is not None else " and it names no work directory"
        raise ShowError(
            f"run {run_id} has no checkpoint: no {CHECKPOINT_ARTIFACT} artifact (run the suite with "
            f"--log-checkpoint to upload it){where} (pass --runs-dir if its work directory is elsewhere)"
        )
    state = workdir / "mlflow.json"
    if state.is_file():
        owner = json.loads(state.read_text()).get("run_id")
        if owner and owner != run_id:
            click.echo(
                f"warning: {local} was last written by MLflow run {owner} (same config key {run.data.tags['run_key']}), "
                f"not by {run_id}; showing it",
                err=True,
            )
    return local, str(local)


def load_model(shown: ShownRun, num_classes: int, min_score: float, max_detections: int) -> tuple[Any, int]:
    """The run's detector with its checkpoint's weights, and the checkpoint's training step."""
    from shapeprop.engine.train import load_model_weights
    from shapeprop.models.build import build_detector

    cfg = shown.config
    if cfg.model.framework != "torchvision":
        raise ShowError(
            f"run {shown.run_id}: show draws torchvision models, not model.framework={cfg.model.framework}"
        )
    model = build_detector(
        cfg.model,
        num_classes,
        cfg.data.min_size,
        cfg.data.max_size,
        score_thresh=min(min_score, cfg.eval.score_threshold),
        # Detections come sorted by score, so the top ones are those the evaluation kept.
        detections_per_img=min(cfg.eval.detections_per_image, max(max_detections, COMPARISON_DETECTIONS)),
    )
    try:
        ckpt = load_model_weights(model, shown.checkpoint)
    except (RuntimeError, KeyError, OSError) as err:
        commit = shown.tags.get("git_commit")
        hint = (
            f" (the run was made by commit {commit[:10]}{' with local changes' if shown.tags.get('git_dirty') == 'true' else ''}: "
            "if the model code changed since, show it from a checkout of that commit)"
            if commit
            else ""
        )
        raise ShowError(
            f"checkpoint {shown.checkpoint_source}: cannot load it into the model of run {shown.run_id}'s config{hint}: {err}"
        ) from None
    saved = (ckpt.get("shapeprop_identity") or {}).get("model") or {}
    current = cfg.model.model_dump(mode="json")
    differ = sorted(k for k in saved if k in current and saved[k] != current[k])  # keys added later: skip
    if differ:
        click.echo(
            f"warning: checkpoint {shown.checkpoint_source} was trained with model.{', model.'.join(differ)} other than "
            f"in run {shown.run_id}'s config",
            err=True,
        )
    step = int(ckpt.get("global_step", -1))
    if step < cfg.schedule.max_steps:
        click.echo(
            f"warning: run {shown.run_id}: checkpoint at step {step} of {cfg.schedule.max_steps}", err=True
        )
    return model, step


# --------------------------------------------------------------------------- images


def evaluation_records(cfg: ExperimentConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """The records the run evaluated on (test split, first `eval.max_images`) and the class names."""
    from shapeprop.data import catalog
    from shapeprop.data.records import DataError

    try:
        test = catalog.load(cfg.data.dataset, cfg.data.root, cfg.data.test_split, **cfg.data.options)
    except DataError as err:
        raise ShowError(f"cannot load the run's evaluation split: {err}") from None
    records = test.records[: cfg.eval.max_images] if cfg.eval.max_images else test.records
    if not records:
        raise ShowError(f"the evaluation split {cfg.data.dataset}/{cfg.data.test_split} has no images")
    return records, list(test.metadata.classes)


def pick_records(
    records: list[dict[str, Any]], count: int, seed: int, image_ids: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The records with `image_ids` (in that order), else `count` records drawn with `seed` (in split order)."""
    if image_ids:
        by_id = {str(r["image_id"]): r for r in records}
        missing = [i for i in image_ids if i not in by_id]
        if missing:
            some = ", ".join(list(by_id)[:10])
            raise ShowError(
                f"image id(s) {', '.join(missing)} not in the run's evaluation split "
                f"({len(by_id)} images: {some}{', ...' if len(by_id) > 10 else ''})"
            )
        return [by_id[i] for i in image_ids]
    picked = sorted(random.Random(seed).sample(range(len(records)), min(count, len(records))))
    return [records[i] for i in picked]


def _same_evaluation_data(a: ExperimentConfig, b: ExperimentConfig) -> bool:
    keys = ("dataset", "root", "test_split", "options")
    return all(getattr(a.data, k) == getattr(b.data, k) for k in keys)


# --------------------------------------------------------------------------- the command


@click.command("show")
@click.argument("run_ids", nargs=-1, metavar="[RUN_ID]...")
@click.option("--suite", help="Pick runs by suite (name or YAML file) + --row (+ --seed, --profile).")
@click.option("--row", "rows", multiple=True, help="Row label of the suite; give two to compare. Repeatable.")
@click.option("--seed", type=int, help="The run's seed (needed when the row has runs of several seeds).")
@click.option("--profile", help="The run's suite profile (needed when the row has runs of several).")
@click.option(
    "--tracking-uri", help="MLflow store. Default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here."
)
@click.option(
    "--runs-dir",
    default="runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Root of the runs' work directories (where checkpoints are when not uploaded to MLflow).",
)
@click.option(
    "--images",
    "num_images",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Images drawn (with --pick-seed) from the run's evaluation split.",
)
@click.option(
    "--image-id", "image_ids", multiple=True, help="Show this image of the evaluation split. Repeatable."
)
@click.option("--pick-seed", type=int, default=0, show_default=True, help="Seed of the image draw.")
@click.option(
    "--detections",
    "max_detections",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Detections per image in the per-detection figures (highest scores first).",
)
@click.option(
    "--min-score",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Draw detections from this score.",
)
@click.option(
    "--panel", type=click.IntRange(min=64), default=192, show_default=True, help="Panel size in pixels."
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="reports",
    show_default=True,
    help="PNGs go to OUT/qualitative/.",
)
@click.option("--log/--no-log", default=True, show_default=True, help="Log the PNGs to the runs in MLflow.")
@set_option
def show(
    run_ids: tuple[str, ...],
    suite: str | None,
    rows: tuple[str, ...],
    seed: int | None,
    profile: str | None,
    tracking_uri: str | None,
    runs_dir: str,
    num_images: int,
    image_ids: tuple[str, ...],
    pick_seed: int,
    max_detections: int,
    min_score: float,
    panel: int,
    device: str,
    out_dir: str,
    log: bool,
    overrides: tuple[str, ...],
) -> None:
    """Qualitative figures of one run, or of two runs side by side (e.g. baseline vs ShapeProp).

    Per image and run: one row per detection with the crop and its box, the instance saliency,
    the shape activation, the predicted mask and the ground-truth mask. For two runs also their
    predicted masks on the same images, side by side (the paper's Fig. 7). Examples:

    \b
        shapeprop-bench show 1c57b98cc2f141b89f64abce1e8b28dd
        shapeprop-bench show --suite demo --profile mini --row baseline --row "baseline + ShapeProp"
    """
    if rows and not suite:
        raise click.UsageError("--row needs --suite")
    if suite and not rows:
        raise click.UsageError("--suite needs --row (the row label of the run to show)")
    if len(run_ids) + len(rows) not in (1, 2):
        raise click.UsageError("name one run, or two to compare: RUN_ID arguments and/or --suite with --row")

    uri = tracking.resolve_tracking_uri(tracking_uri)
    if not tracking.store_exists(uri):
        raise ShowError(f"no MLflow store at {uri}: run a suite first (or pass --tracking-uri)")
    client = tracking.client(uri)
    runs = [get_run(client, run_id, uri) for run_id in run_ids]
    sets = parse_set(overrides)
    runs += [find_suite_run(client, uri, suite, row, seed, profile, sets) for row in rows]  # type: ignore[arg-type]
    for run in runs:
        if run.data.tags.get("kind") == "invocation":
            raise ShowError(
                f"run {run.info.run_id} is the parent run of a `run` invocation; name one of its child runs"
            )
        if run.info.status != "FINISHED":
            click.echo(f"warning: run {run.info.run_id} is {run.info.status}, not FINISHED", err=True)

    import torch

    from shapeprop import visualize

    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if dev == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available here", param_hint="--device")
    root = Path(out_dir) / ARTIFACT_DIR
    with tempfile.TemporaryDirectory(prefix="shapeprop-show-") as tmp:
        scratch = Path(tmp)
        shown = []
        for run in runs:
            cfg = load_config(client, run, Path(runs_dir), scratch)
            checkpoint, source = find_checkpoint(client, run, Path(runs_dir), scratch)
            shown.append(ShownRun(run, cfg, checkpoint, source))
        if len(shown) == 2 and not _same_evaluation_data(shown[0].config, shown[1].config):
            raise ShowError(
                f"runs {shown[0].run_id} and {shown[1].run_id} were evaluated on different data "
                "(data.dataset / root / test_split / options differ): they cannot be compared image by image"
            )
        records, classes = evaluation_records(shown[0].config)
        picked = pick_records(records, num_images, pick_seed, image_ids)

        all_views, written = [], {s.run_id: [] for s in shown}
        for s in shown:
            model, step = load_model(s, len(classes), min_score, max_detections)
            views = visualize.predict_views(
                model, picked, classes, s.config.data.min_size, s.config.data.max_size, dev
            )
            all_views.append(views)
            suite_name = s.tags.get("suite", "?")
            for view in views:
                title = (
                    f"{s.label} (seed {s.tags.get('seed', '?')}), image {view.image_id}\n"
                    f"suite {suite_name}, run {s.run_id[:8]}, step {step}, {s.config.data.dataset}/"
                    f"{s.config.data.test_split}"
                )
                fig = visualize.render_detections(view, title, max_detections, min_score, panel)
                path = root / s.slug / f"image-{_slug(str(view.image_id))}.png"
                written[s.run_id].append(visualize.save_png(fig, path))
            click.echo(
                f"run {s.run_id} ({s.label}, seed {s.tags.get('seed', '?')}, step {step}; "
                f"checkpoint from {s.checkpoint_source})"
            )
        compare = None
        if len(shown) == 2:
            names = [s.label for s in shown]
            if names[0] == names[1]:
                names = [f"{s.label} ({s.run_id[:8]})" for s in shown]
            title = (
                f"{names[0]}  vs  {names[1]}: predicted masks\n"
                f"{shown[0].config.data.dataset}/{shown[0].config.data.test_split}, "
                f"runs {shown[0].run_id[:8]} and {shown[1].run_id[:8]}"
            )
            fig = visualize.render_comparison(all_views, names, title, COMPARISON_DETECTIONS, min_score)
            compare = visualize.save_png(fig, root / f"compare-{shown[0].slug}-vs-{shown[1].slug}.png")
            for s in shown:
                written[s.run_id].append(compare)

    from mlflow.exceptions import MlflowException

    for s in shown:
        if log:
            for path in written[s.run_id]:
                subdir = ARTIFACT_DIR if path == compare else f"{ARTIFACT_DIR}/{s.slug}"
                try:
                    tracking.with_retry(
                        lambda r=s.run_id, p=path, d=subdir: client.log_artifact(r, str(p), d),
                        f"upload {path.name}",
                    )
                except (MlflowException, OSError) as err:
                    raise ShowError(
                        f"{path} is written, but logging it to run {s.run_id} failed: {err}"
                    ) from None
        where = f" (logged to MLflow run {s.run_id} under {ARTIFACT_DIR}/)" if log else ""
        click.echo(f"{s.label}{where}:")
        for path in written[s.run_id]:
            click.echo(f"  {path}")
    click.echo(f"Browse the runs: mlflow ui --backend-store-uri {uri}")


if __name__ == "__main__":
    show()
