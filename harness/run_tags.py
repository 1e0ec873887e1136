"""What a run is called and tagged in MLflow: the flattened config (params), versions and git
state, MLflow's own system tags (source, git commit, user), run names and one-line descriptions."""

from __future__ import annotations

import functools
import json
import os
import platform
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.suite import RunSpec
    from shapeprop.config import ExperimentConfig

RUN_NAME_TAG = "mlflow.runName"
NOTE_TAG = "mlflow.note.content"
SOURCE_NAME_TAG = "mlflow.source.name"
SOURCE_TYPE_TAG = "mlflow.source.type"
SOURCE_TYPE = "LOCAL"  # mlflow.entities.SourceType for a local script (PROJECT is `mlflow run`)
GIT_COMMIT_TAG = "mlflow.source.git.commit"
USER_TAG = "mlflow.user"
TRAINED_BY_TAG = "trained_by"  # a run that started from another's finished training: "<suite>/<run key>"


def param_value(value: Any) -> str:
    """A config value as `flatten_config` writes it (MLflow params): lists and dicts as JSON."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "None" if value is None else str(value)


def flatten_config(config: ExperimentConfig) -> dict[str, str]:
    """The resolved config as dotted keys -> strings (MLflow params; lists/dicts as JSON)."""
    from harness.suite.config_keys import is_model, unwrap
    from shapeprop.config import ExperimentConfig

    out: dict[str, str] = {}

    def walk(node: Any, prefix: str, annotation: Any) -> None:
        if isinstance(node, dict) and is_model(annotation):
            model = unwrap(annotation)
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else key, model.model_fields[key].annotation)
        else:
            out[prefix] = param_value(node)

    walk(config.model_dump(mode="json"), "", ExperimentConfig)
    return out


@functools.cache
def environment_tags() -> dict[str, str]:
    """Versions, device and git state of this process (computed once per process)."""
    from harness.environment import collect, git_state

    info = collect()
    tags = {f"version.{k.replace(' ', '_')}": v for k, v in info.items() if k not in ("gpu", "platform")}
    tags["platform"] = info.get("platform", platform.platform())
    gpu = info.get("gpu", "none visible")
    tags["device"] = gpu if gpu != "none visible" else f"cpu ({os.cpu_count()} cores)"
    tags["host"] = socket.gethostname()
    tags.update(git_state(Path(__file__).resolve().parent))
    if tags["git_commit"] != "unknown":
        tags[GIT_COMMIT_TAG] = tags["git_commit"]
    tags[USER_TAG] = user()
    return tags


def user() -> str:
    """Who runs this process, as MLflow's fluent API would record it (`mlflow.user`)."""
    import getpass

    try:
        return getpass.getuser()
    except (ImportError, KeyError, OSError):  # no such user in the password database (containers)
        return os.environ.get("USER") or "unknown"


def source_tags(suite_name: str, profile: str) -> dict[str, str]:
    """MLflow's source tags: what ran, as the command that runs it (`suites/<suite>.yaml` is found by
    name). The UI's Source column shows the text after the last '/': so the name has none."""
    command = f"shapeprop-bench run {suite_name}" + (f" --profile {profile}" if profile != "full" else "")
    return {SOURCE_NAME_TAG: command.replace("/", "_"), SOURCE_TYPE_TAG: SOURCE_TYPE}


def spec_tags(spec: RunSpec) -> dict[str, str]:
    """The contract's identifying tags of a child run, with its name, description and source."""
    reproduces = f", reproduces {spec.reproduces}" if spec.reproduces else ""
    note = (  # what tells the runs of a suite apart first: the UI cuts the column short
        f"Row {spec.row!r}, seed {spec.seed} ({spec.method}) of suite {spec.suite}, profile "
        f"{spec.profile}{reproduces}; run key {spec.key}."
    )
    from harness.plugins import loaded

    plugin_tag = {"plugins": ", ".join(loaded())} if loaded() else {}  # what registered its parts
    return {
        **plugin_tag,
        "kind": "run",
        "suite": spec.suite,
        "reproduces": spec.reproduces or "",
        "row": spec.row,
        "method": spec.method,
        "seed": str(spec.seed),
        "run_key": spec.key,
        "profile": spec.profile,
        RUN_NAME_TAG: f"{spec.row} | seed {spec.seed} | {spec.key[:8]}",
        NOTE_TAG: note,
        **source_tags(spec.suite, spec.profile),
    }
