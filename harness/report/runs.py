"""Read the finished runs of one table or figure from MLflow into a pandas DataFrame.

Layout written by `harness/tracking.py`: experiment `shapeprop-bench/<suite>`, a child run
per run spec with tag `kind=run` and tags `suite, reproduces, row, method, seed, run_key,
profile`; metrics in percent; params are the flattened resolved config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas

from harness.tracking import EXPERIMENT_PREFIX

REPORTS_EXPERIMENT = EXPERIMENT_PREFIX + "reports"
TAGS = ("suite", "reproduces", "row", "method", "seed", "run_key", "profile")
PARAM_PREFIX = "param:"


@dataclass
class RunSelection:
    """The runs a report uses, and what it left out (shown as notes under the report)."""

    runs: pandas.DataFrame
    other_profiles: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def experiment_ids(client, suite: str | None = None) -> list[str]:
    """Ids of the suite experiments (`shapeprop-bench/*`, or just `shapeprop-bench/<suite>`)."""
    if suite is not None:
        experiment = client.get_experiment_by_name(EXPERIMENT_PREFIX + suite)
        return [] if experiment is None else [experiment.experiment_id]
    ids, token = [], None
    while True:
        page = client.search_experiments(
            filter_string=f"name LIKE '{EXPERIMENT_PREFIX}%'", max_results=1000, page_token=token
        )
        ids += [e.experiment_id for e in page if e.name != REPORTS_EXPERIMENT]
        token = page.token
        if not token:
            return ids


def fetch_runs(client, reproduces: str, suite: str | None = None) -> pandas.DataFrame:
    """All FINISHED child runs tagged `reproduces=<reproduces>`, one row per run.

    Columns: `run_id`, `start_time` (ms), the tags in TAGS, one column per metric (its MLflow
    name) and one per param (`param:<dotted key>`). One paged search over all suite experiments.
    """
    import pandas
    from mlflow.entities import ViewType

    ids = experiment_ids(client, suite)
    records = []
    token = None
    query = f"tags.kind = 'run' AND tags.reproduces = '{reproduces}' AND attributes.status = 'FINISHED'"
    while ids:
        page = client.search_runs(
            ids, query, run_view_type=ViewType.ACTIVE_ONLY, max_results=10_000, page_token=token
        )
        for run in page:
            record = {"run_id": run.info.run_id, "start_time": run.info.start_time}
            record.update({tag: run.data.tags.get(tag, "") for tag in TAGS})
            record.update(run.data.metrics)
            record.update({PARAM_PREFIX + key: value for key, value in run.data.params.items()})
            records.append(record)
        token = page.token
        if not token:
            break
    columns = ["run_id", "start_time", *TAGS]
    return pandas.DataFrame.from_records(records, columns=None if records else columns)


def select(runs: pandas.DataFrame, profile: str, cell: list[str]) -> RunSelection:
    """Keep `profile`'s runs; the newest per run key, then the newest per (cell, seed).

    `cell` names the columns that place a run in the report. Two runs of one cell and seed
    but different keys come from an edited suite (same label, new config): the newer wins,
    and a note says how many older ones were left out.
    """
    if not len(runs):
        return RunSelection(runs)
    counts = runs["profile"].value_counts().to_dict()
    other = {name: int(n) for name, n in counts.items() if name != profile}
    runs = runs[runs["profile"] == profile]
    runs = runs.sort_values("start_time", ascending=False, kind="stable")
    runs = runs.drop_duplicates("run_key")
    newest = runs.drop_duplicates([c for c in [*cell, "seed"] if c in runs])
    notes = []
    if len(newest) < len(runs):
        notes.append(
            f"{len(runs) - len(newest)} older run(s) with the same row label and seed but another config "
            "were left out (the newest wins)"
        )
    return RunSelection(newest.reset_index(drop=True), other, notes)
