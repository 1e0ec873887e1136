"""MLflow tracking: where runs are stored, which keys are done, and batched logging of one run.

Layout (the contract the report reads): experiment `shapeprop-bench/<suite>`; one parent run
per invocation (tag `kind=invocation`); a nested child run per run spec (tag `kind=run`, tags
suite/reproduces/row/method/seed/run_key/profile/git/device/versions, params = the flattened
resolved config). Everything goes through `MlflowClient` (no fluent global state), so several
runs can log from one process or from many.

What MLflow's own UI reads is written too: the experiment kind (`mlflow.experimentKind`, so the
UI opens on the runs, not on GenAI traces), MLflow's system tags (source, git commit, user), a
run name and a one-line description (`mlflow.note.content`) for every run, and the training and
test sets of every child run as MLflow dataset inputs (the Dataset column).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from harness.errors import UserError
from harness.retry import with_retry as with_retry
from harness.run_tags import NOTE_TAG, RUN_NAME_TAG, environment_tags, source_tags

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient


log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT_PREFIX = "shapeprop-bench/"
PARENT_TAG = "mlflow.parentRunId"
# MLflow's tags (mlflow.utils.mlflow_tags; spelled out so planning need not import MLflow).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # the UI's kind for model training
# Kinds replaced by ours: none, the GenAI one, and those the UI infers (and may store) by itself.
REPLACED_KINDS = (
    "",
    "genai_development",
    "genai_development_inferred",
    "custom_model_development_inferred",
    "no_inferred_type",
)
# MLflow's limits per log_batch call.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100


def resolve_tracking_uri(uri: str | None = None) -> str:
    """`uri`, else `$MLFLOW_TRACKING_URI`, else `sqlite:///mlflow.db` in the working directory.

    A relative SQLite or file path is made absolute, so worker processes started elsewhere
    (Slurm jobs, submitit) write to the same store.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri[len("sqlite:///") :]
        if path and path != ":memory:":
            return "sqlite:///" + str(Path(path).resolve())
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file") and "://" not in uri:
        return str(Path(uri).resolve())
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for other stores and an in-memory one)."""
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        return Path(uri[len("sqlite:///") :])
    return None


def store_exists(uri: str) -> bool:
    """False only for a SQLite store whose file does not exist yet (reading must not create it)."""
    path = sqlite_path(uri)
    return path is None or path.exists()


def experiment_name(suite_name: str) -> str:
    return EXPERIMENT_PREFIX + suite_name


def artifact_location(uri: str, name: str) -> str | None:
    """Where a new experiment `name` of the store `uri` keeps its artifacts: for a SQLite store,
    `mlartifacts/<name>` beside the database file, so that a store is one folder to back up, copy
    or delete (MLflow's default is `./mlruns` in whatever directory the creating process ran; the
    location is stored as an absolute path, so a copy must keep the path). None for other stores:
    their server decides."""
    path = sqlite_path(uri)
    if path is None:
        return None
    return (path.parent / "mlartifacts" / name).resolve().as_uri()


# MLflow's REST client retries a request for about 4 minutes by default, blocking its caller; the
# harness retries in its own loop instead (`with_retry`, bounded by $SHAPEPROP_TRACKING_WAIT), so
# each call of MLflow's gives up after seconds. Set in the environment, these win.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def client(uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    for name, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(mlflow_client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created if needed (safe when several processes race; its
    artifacts where `artifact_location` says), marked as model training (`mlflow.experimentKind`)
    also when it was created before the tag existed."""
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(name)
    if found is None:
        try:
            return mlflow_client.create_experiment(
                name,
                artifact_location=artifact_location(mlflow_client.tracking_uri, name),
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )
        except MlflowException:  # another process created it between the two calls
            found = mlflow_client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(found.experiment_id)
    if found.tags.get(EXPERIMENT_KIND_TAG, "") in REPLACED_KINDS:
        with_retry(
            lambda: mlflow_client.set_experiment_tag(
                found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
            ),
            "mark experiment kind",
        )
    return found.experiment_id


# --------------------------------------------------------------------------- access

CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@contextlib.contextmanager
def access_checked(uri: str) -> Iterator[None]:
    """MLflow's error for a tracking server that refused this client (HTTP 401 or 403: its
    authentication is on) as a `UserError` naming the server and the two variables MLflow's client
    reads the credentials from (never logged, never written by the harness)."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as err:
        if err.error_code not in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise
        given = all(os.environ.get(name) for name in CREDENTIAL_ENV)
        why = "refused these credentials" if given else "asks for credentials"
        raise UserError(
            f"the tracking server {uri} refused the request ({err.error_code}): it {why}. Set "
            f"{CREDENTIAL_ENV[0]} and {CREDENTIAL_ENV[1]} in the environment to a user of that server "
            "(with permission to write to the suite's experiment), then run again"
        ) from None


# --------------------------------------------------------------------------- what is in the store


@dataclass(frozen=True)
class KeyState:
    """What the store holds for one run key: the state the harness acts on, and the run behind it."""

    state: str  # finished | running | failed | missing
    run_id: str | None = None
    status: str | None = None  # the MLflow status of that run


def key_states(uri: str, suite_name: str, keys: Iterable[str] | None = None) -> dict[str, KeyState]:
    """For every run key of the suite's experiment: finished if any run of it FINISHED, else the newest run's state.

    The first question a `run` asks the store: a server that refuses this client (authentication on,
    no or wrong credentials) raises a `UserError` saying how to pass them."""
    if not store_exists(uri):
        return {}
    rows = _child_runs_sqlite(uri, experiment_name(suite_name))
    if rows is None:
        with access_checked(uri):
            rows = _child_runs_client(uri, experiment_name(suite_name))
    wanted = set(keys) if keys is not None else None
    states: dict[str, KeyState] = {}
    for run_id, key, status in rows:  # newest first
        if wanted is not None and key not in wanted:
            continue
        current = states.get(key)
        if status == "FINISHED" and (current is None or current.state != "finished"):
            states[key] = KeyState("finished", run_id, status)
        elif current is None:
            state = "running" if status in ("RUNNING", "SCHEDULED") else "failed"
            states[key] = KeyState(state, run_id, status)
    return states


def search_runs(
    mlflow_client: MlflowClient, experiment_ids: list[str], filter_string: str = ""
) -> Iterator[Run]:
    """Every active run of the experiments that matches `filter_string`, newest first, page by page."""
    token = None
    while experiment_ids:
        page = mlflow_client.search_runs(
            experiment_ids,
            filter_string=filter_string,
            max_results=5000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


def child_runs(mlflow_client: MlflowClient, experiment_id: str) -> list[Run]:
    """The child runs (tag `kind=run`) of a suite's experiment, newest first."""
    return list(search_runs(mlflow_client, [experiment_id], "tags.kind = 'run'"))


def _child_runs_client(uri: str, experiment: str) -> list[tuple[str, str, str]]:
    """(run id, run key, status) of the experiment's active child runs, newest first, via MLflow."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = child_runs(c, exp.experiment_id)
    return [(r.info.run_id, r.data.tags["run_key"], r.info.status) for r in runs if "run_key" in r.data.tags]


# MLflow's SQL schema (stable since MLflow 1.x); any mismatch falls back to the client.
_CHILD_RUNS_SQL = """
SELECT runs.run_uuid, key_tag.value, runs.status
FROM runs
JOIN experiments ON experiments.experiment_id = runs.experiment_id
JOIN tags AS kind_tag ON kind_tag.run_uuid = runs.run_uuid AND kind_tag.key = 'kind' AND kind_tag.value = 'run'
JOIN tags AS key_tag ON key_tag.run_uuid = runs.run_uuid AND key_tag.key = 'run_key'
WHERE experiments.name = ? AND runs.lifecycle_stage = 'active'
ORDER BY runs.start_time DESC
"""


def _child_runs_sqlite(uri: str, experiment: str) -> list[tuple[str, str, str]] | None:
    """As `_child_runs_client`, read straight from a SQLite store (read-only, no MLflow import:
    planning stays fast); None when `uri` is not SQLite or the schema is not the expected one."""
    import sqlite3

    path = sqlite_path(uri)
    if path is None:
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            return [tuple(row) for row in db.execute(_CHILD_RUNS_SQL, (experiment,))]
    except sqlite3.Error as err:
        log.debug("reading %s directly failed (%s); using the MLflow client", path, err)
        return None


@contextlib.contextmanager
def quiet_downloads() -> Iterator[None]:
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


@contextlib.contextmanager
def fluent_uri(uri: str) -> Iterator[None]:
    """MLflow's global (fluent) tracking URI set to `uri` for the block, for the MLflow functions
    that read only it (logging and loading models); the previous one, and `$MLFLOW_TRACKING_URI`
    (which `mlflow.set_tracking_uri` also sets or unsets), restored after."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    name = "MLFLOW_TRACKING_URI"
    before, before_env = utils._tracking_uri, os.environ.get(name)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if before_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before_env


# --------------------------------------------------------------------------- invocation (parent) runs


def command_line(argv: list[str] | None = None) -> str:
    """This process's command line, as typed (`shapeprop-bench run ...` for the CLI)."""
    import shlex

    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return "<unknown>"
    if Path(argv[0]).name == "shapeprop-bench":
        argv[0] = "shapeprop-bench"
    return shlex.join(argv)


def invocation_note(suite_name: str, tags: Mapping[str, str], command: str) -> str:
    """The one-line description of a parent run: suite, profile, what it runs, the command."""
    profile = tags.get("profile", "full")
    parts = [f"Suite {suite_name}, profile {profile} (one invocation)"]
    if tags.get("runs_planned"):
        parts.append(f"{tags['runs_planned']} run(s) to do, {tags.get('runs_skipped') or 0} already finished")
    for key, label in (("only", "only"), ("overrides", "--set"), ("executor", "executor")):
        if tags.get(key):
            parts.append(f"{label} {tags[key]}")
    return ", ".join(parts) + f"; command: {command}"


def start_invocation(uri: str, suite_name: str, tags: Mapping[str, str]) -> str:
    """Create the parent run of one `shapeprop-bench run` invocation; returns its run id.

    Named `<suite> [<profile>] <date time>`, described in one line (`invocation_note`), with
    MLflow's source tags and the command line (tag `command`)."""
    c = client(uri)
    exp_id = ensure_experiment(c, experiment_name(suite_name))
    profile = tags.get("profile", "full")
    command = command_line()
    all_tags = {
        "kind": "invocation",
        "suite": suite_name,
        "command": command,
        **environment_tags(),
        **source_tags(suite_name, profile),
        **tags,
    }
    all_tags.setdefault(RUN_NAME_TAG, f"{suite_name} [{profile}] {time.strftime('%Y-%m-%d %H:%M:%S')}")
    all_tags.setdefault(NOTE_TAG, invocation_note(suite_name, all_tags, command))
    run = with_retry(lambda: c.create_run(exp_id, tags=all_tags), "create invocation run")
    return run.info.run_id


def end_run(uri: str, run_id: str, status: str, metrics: Mapping[str, float] | None = None) -> None:
    """Log final metrics (if any) and set the run's terminal status (FINISHED, FAILED, KILLED)."""
    c = client(uri)
    if metrics:
        log_metrics(c, run_id, metrics, step=0)
    with_retry(lambda: c.set_terminated(run_id, status=status), f"terminate run {run_id}")


# --------------------------------------------------------------------------- batched logging


def log_metrics(mlflow_client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """Log a dict of metrics at one step with one call (no batching across steps)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
    for i in range(0, len(batch), MAX_METRICS_PER_BATCH):
        chunk = batch[i : i + MAX_METRICS_PER_BATCH]
        with_retry(lambda chunk=chunk: mlflow_client.log_batch(run_id, metrics=chunk), "log metrics")


def log_params(mlflow_client: MlflowClient, run_id: str, params: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        chunk = items[i : i + MAX_PARAMS_PER_BATCH]
        with_retry(lambda chunk=chunk: mlflow_client.log_batch(run_id, params=chunk), "log params")


def set_tags(mlflow_client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    items = [RunTag(k, str(v)[:8000]) for k, v in tags.items()]
    for i in range(0, len(items), MAX_TAGS_PER_BATCH):
        chunk = items[i : i + MAX_TAGS_PER_BATCH]
        with_retry(lambda chunk=chunk: mlflow_client.log_batch(run_id, tags=chunk), "set tags")


def last_logged_step(mlflow_client: MlflowClient, run_id: str, metric: str = "loss") -> int:
    """The highest step of `metric` already in the run (-1 if none)."""
    history = with_retry(lambda: mlflow_client.get_metric_history(run_id, metric), "read metric history")
    return max((m.step for m in history), default=-1)
