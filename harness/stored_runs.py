"""Finished runs read back from MLflow: found by id or by suite + row + seed (+ profile), with
their resolved config (the `config.yaml` artifact, else the work directory's), their checkpoint
(the `checkpoints/last.ckpt` artifact of runs made with `run --log-checkpoint`, else the work
directory's) and their trained model.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import tracking
from harness.errors import UserError
from harness.run_tags import param_value
from harness.workdir import CONFIG_FILE, LAST_CHECKPOINT, STATE_FILE, run_workdir

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from shapeprop.config import ExperimentConfig

log = logging.getLogger(__name__)

COMPARISON_DETECTIONS = 10  # detections drawn per image and model in the side-by-side figure


class ShowError(UserError):
    """A run that cannot be shown (missing, not a run of a spec, no checkpoint, ...); the CLI prints
    its message."""


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
        return f"{slug(self.label)}-seed{self.tags.get('seed', '?')}-{self.run_id[:8]}"


def slug(text: str) -> str:
    """`text` as a file-name part: lower case, runs of other characters as one dash."""
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
    runs = tracking.child_runs(client, experiment.experiment_id)
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
    return run_workdir(runs_dir, tags["suite"], tags["run_key"])


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
    with tracking.quiet_downloads():
        return Path(client.download_artifacts(run_id, path, str(dst)))


def load_config(client: MlflowClient, run: Run, runs_dir: Path, scratch: Path) -> ExperimentConfig:
    """The run's resolved config: its `config.yaml` artifact, else `<work dir>/config.yaml`."""
    import yaml
    from pydantic import ValidationError

    from shapeprop.config import ExperimentConfig

    path = _artifact(client, run.info.run_id, CONFIG_FILE, scratch / run.info.run_id)
    workdir = _workdir(run, runs_dir)
    if path is None and workdir is not None and (workdir / CONFIG_FILE).is_file():
        path = workdir / CONFIG_FILE
    if path is None:
        where = f" nor at {workdir / CONFIG_FILE}" if workdir is not None else ""
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
    path = _artifact(client, run_id, LAST_CHECKPOINT, scratch / run_id)
    if path is not None:
        return path, f"MLflow artifact {LAST_CHECKPOINT}"
    workdir = _workdir(run, runs_dir)
    local = workdir / LAST_CHECKPOINT if workdir is not None else None
    if local is None or not local.is_file():
        where = f" and there is no {local}" if local is not None else " and it names no work directory"
        raise ShowError(
            f"run {run_id} has no checkpoint: no {LAST_CHECKPOINT} artifact (run the suite with "
            f"--log-checkpoint to upload it){where} (pass --runs-dir if its work directory is elsewhere)"
        )
    state = workdir / STATE_FILE
    if state.is_file():
        owner = json.loads(state.read_text()).get("run_id")
        if owner and owner != run_id:
            log.warning(
                f"{local} was last written by MLflow run {owner} (same config key {run.data.tags['run_key']}), "
                f"not by {run_id}; showing it"
            )
    return local, str(local)


def load_model(shown: ShownRun, num_classes: int, min_score: float, max_detections: int) -> tuple[Any, int]:
    """The run's detector with its checkpoint's weights, and the checkpoint's training step."""
    from shapeprop.models.build import load_detector

    cfg = shown.config
    if cfg.model.framework != "torchvision":
        raise ShowError(
            f"run {shown.run_id}: show draws torchvision models, not model.framework={cfg.model.framework}"
        )
    try:
        model, ckpt = load_detector(
            cfg,
            num_classes,
            shown.checkpoint,
            score_thresh=min(min_score, cfg.eval.score_threshold),
            # Detections come sorted by score, so the top ones are those the evaluation kept.
            detections_per_img=min(cfg.eval.detections_per_image, max(max_detections, COMPARISON_DETECTIONS)),
        )
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
        log.warning(
            f"checkpoint {shown.checkpoint_source} was trained with model.{', model.'.join(differ)} other than "
            f"in run {shown.run_id}'s config"
        )
    step = int(ckpt.get("global_step", -1))
    if step < cfg.schedule.max_steps:
        log.warning(f"run {shown.run_id}: checkpoint at step {step} of {cfg.schedule.max_steps}")
    return model, step


def find_runs(
    client: MlflowClient,
    uri: str,
    run_ids: tuple[str, ...] = (),
    suite: str | None = None,
    rows: tuple[str, ...] = (),
    seed: int | None = None,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[Run]:
    """The runs named by id, then those of `suite`'s `rows`; warns about runs not FINISHED."""
    runs = [get_run(client, run_id, uri) for run_id in run_ids]
    runs += [find_suite_run(client, uri, suite, row, seed, profile, overrides) for row in rows]  # type: ignore[arg-type]
    for run in runs:
        if run.data.tags.get("kind") == "invocation":
            raise ShowError(
                f"run {run.info.run_id} is the parent run of a `run` invocation; name one of its child runs"
            )
        if run.info.status != "FINISHED":
            log.warning(f"run {run.info.run_id} is {run.info.status}, not FINISHED")
    return runs
