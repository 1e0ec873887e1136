"""Finished runs as a plain, committable file, and back into an MLflow store.

A run archive is JSON Lines, one line per FINISHED child run: its suite, run id, start and end
times, tags, params (the flattened resolved config), final metrics and its small CSV tables
(`best_overlap.csv`, read by Fig. 9). It is what a report needs, not a store: no metric history,
no checkpoint, no log. `export_runs` writes it (merged with the file's earlier lines, so a run
lost from the store stays archived); `import_runs` recreates its runs in a store as FINISHED child
runs (tag `archived_from`) that `run` then skips and `report` renders. It lets results outlive a
lost store, move between clusters, or be merged from several.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import tracking
from harness.run_tags import RUN_NAME_TAG
from shapeprop.files import write_atomic

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

ARCHIVED_FROM_TAG = "archived_from"
ARCHIVED_RUN_ID_TAG = "archived_run_id"  # the run id the record had in the store it was exported from
SKIPPED_TAGS = (tracking.PARENT_TAG, "mlflow.log-model.history")  # the parent belongs to the old store
MAX_TABLE_BYTES = 2_000_000  # a CSV table larger than this stays out of the archive


class ArchiveError(ValueError):
    """A run archive that cannot be read; the message names the file and line."""


@dataclass
class Imported:
    added: int
    skipped: int  # runs whose key the store already holds FINISHED


def run_record(client: MlflowClient, run: Run) -> dict[str, Any]:
    """One archive line: what the reports read of a finished child run."""
    tags = {k: v for k, v in run.data.tags.items() if k not in SKIPPED_TAGS}
    tables = {}
    for artifact in client.list_artifacts(run.info.run_id):
        if (
            not artifact.is_dir
            and artifact.path.endswith(".csv")
            and (artifact.file_size or 0) <= MAX_TABLE_BYTES
        ):
            with tracking.quiet_downloads():
                local = client.download_artifacts(run.info.run_id, artifact.path)
            tables[artifact.path] = Path(local).read_text()
    return {
        "suite": tags.get("suite", ""),
        "run_key": tags.get("run_key", ""),
        "run_id": run.info.run_id,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "tags": tags,
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tables": tables,
    }


def read_archive(path: Path) -> list[dict[str, Any]]:
    """The records of an archive file; a clear error naming the file and line for a bad one."""
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ArchiveError(f"{path}, line {number}: not JSON ({err.msg})") from None
        missing = [k for k in ("suite", "run_key", "run_id", "tags", "params", "metrics") if k not in record]
        if missing:
            raise ArchiveError(f"{path}, line {number}: a run record lacks {', '.join(missing)}")
        records.append(record)
    return records


def export_runs(
    uri: str, path: Path, profile: str | None = None, suites: Iterable[str] = (), progress: bool = False
) -> tuple[int, int]:
    """Write the FINISHED child runs of the store (of `profile` and `suites`, if given; the newest per
    suite and run key) to `path`, keeping the file's earlier records of other runs. Returns (runs
    from the store, records kept from the file)."""
    from rich.progress import track

    from harness.report.runs import experiment_ids

    client = tracking.client(uri)
    wanted = set(suites)
    ids = [i for s in wanted for i in experiment_ids(client, s)] if wanted else experiment_ids(client)
    newest: dict[tuple[str, str], Run] = {}
    query = "tags.kind = 'run' AND attributes.status = 'FINISHED'"
    for run in tracking.search_runs(client, ids, query):  # newest first
        # The profile is compared here, not in the query: a profile name is free text, unsafe to quote.
        if not profile or run.data.tags.get("profile") == profile:
            newest.setdefault((run.data.tags.get("suite", ""), run.data.tags.get("run_key", "")), run)
    earlier = {(r["suite"], r["run_key"]): r for r in read_archive(path)} if path.exists() else {}
    records = {}
    for key, run in track(newest.items(), "export runs", len(newest), disable=not progress):
        record = earlier.get(key)
        # A run the file already holds (exported from this store, or imported from the file) is not
        # downloaded again: a finished run does not change.
        same = record is not None and record["run_id"] in (
            run.info.run_id,
            run.data.tags.get(ARCHIVED_RUN_ID_TAG),
        )
        records[key] = record if same else run_record(client, run)
    kept = 0
    for key, record in earlier.items():
        if key not in records:
            records[key] = record
            kept += 1
    lines = [json.dumps(records[key], sort_keys=True) for key in sorted(records)]
    write_atomic(path, "".join(line + "\n" for line in lines))
    return len(newest), kept


def import_runs(uri: str, path: Path, progress: bool = False) -> Imported:
    """Recreate the archive's runs in the store (one invocation run per suite as their parent),
    skipping every run whose suite and key the store already holds FINISHED."""
    from rich.progress import track

    records = read_archive(path)
    client = tracking.client(uri)
    parents: dict[str, tuple[str, str]] = {}  # suite -> (experiment id, invocation run id)
    finished = {
        suite: {k for k, s in tracking.key_states(uri, suite).items() if s.state == "finished"}
        for suite in {r["suite"] for r in records}
    }
    added = skipped = 0
    for record in track(records, "import runs", disable=not progress):
        suite = record["suite"]
        if record["run_key"] in finished[suite]:
            skipped += 1
            continue
        if suite not in parents:
            experiment_id = tracking.ensure_experiment(client, tracking.experiment_name(suite))
            parents[suite] = (
                experiment_id,
                client.create_run(
                    experiment_id,
                    tags={
                        "kind": "invocation",
                        "suite": suite,
                        ARCHIVED_FROM_TAG: str(path),
                        RUN_NAME_TAG: f"{suite} imported from {path.name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                    },
                ).info.run_id,
            )
        experiment_id, parent = parents[suite]
        tags = {**record["tags"], tracking.PARENT_TAG: parent, ARCHIVED_FROM_TAG: str(path)}
        tags[ARCHIVED_RUN_ID_TAG] = record["run_id"]
        run = client.create_run(experiment_id, start_time=record.get("start_time"), tags={})
        run_id = run.info.run_id
        tracking.log_params(client, run_id, record["params"])
        tracking.set_tags(client, run_id, tags)
        tracking.log_metrics(client, run_id, record["metrics"], step=0)
        for name, text in (record.get("tables") or {}).items():
            client.log_text(run_id, text, name)
        client.set_terminated(run_id, status="FINISHED", end_time=record.get("end_time"))
        finished[suite].add(record["run_key"])
        added += 1
    for _, parent in parents.values():  # an import is over when its runs are in: not left RUNNING
        client.set_terminated(parent, status="FINISHED")
    return Imported(added, skipped)
