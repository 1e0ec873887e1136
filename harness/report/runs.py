"""Read the finished runs of one table or figure from MLflow into a pandas DataFrame.

Layout written by `harness/tracking.py`: experiment `shapeprop-bench/<suite>`, a child run
per run spec with tag `kind=run` and tags `suite, reproduces, row, method, seed, run_key,
profile`; metrics in percent; params are the flattened resolved config.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas

    from harness.suite import Suite

from harness.run_tags import param_value
from harness.tracking import EXPERIMENT_PREFIX, search_runs

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


def fetch_runs(
    client, reproduces: str, suite: str | None = None, overrides: Mapping[str, Any] | None = None
) -> pandas.DataFrame:
    """All child runs tagged `reproduces=<reproduces>` (any status), one row per run.

    Columns: `run_id`, `status`, `start_time` (ms), the tags in TAGS, one column per metric (its
    MLflow name) and one per param (`param:<dotted key>`). One paged search over all suite experiments.
    `overrides` (`--set` values) keep only the runs whose config has them.
    """
    import pandas

    records = []
    query = f"tags.kind = 'run' AND tags.reproduces = '{reproduces}'"
    for run in search_runs(client, experiment_ids(client, suite), query):
        record = {"run_id": run.info.run_id, "status": run.info.status, "start_time": run.info.start_time}
        record.update({tag: run.data.tags.get(tag, "") for tag in TAGS})
        record.update(run.data.metrics)
        record.update({PARAM_PREFIX + key: value for key, value in run.data.params.items()})
        records.append(record)
    columns = ["run_id", "status", "start_time", *TAGS]
    runs = pandas.DataFrame.from_records(records, columns=None if records else columns)
    for key, value in (overrides or {}).items():
        runs = runs[_param_column(runs, key) == param_value(value)]
    return runs


def _param_column(runs: pandas.DataFrame, key: str) -> pandas.Series:
    """The runs' value of config key `key` as `param_value` writes it; None where they have none.

    A key inside a free dict (`data.options.version`) is not a param of its own: the dict is one
    JSON param (`data.options`), read here."""
    import pandas

    if PARAM_PREFIX + key in runs:
        return runs[PARAM_PREFIX + key]
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        column = PARAM_PREFIX + ".".join(parts[:cut])
        if column in runs:
            inner = parts[cut:]
            return runs[column].map(functools.partial(_nested, path=inner))
    return pandas.Series(None, index=runs.index, dtype=object)


def _nested(text: Any, path: list[str]) -> str | None:
    try:
        node = json.loads(text)
    except (TypeError, ValueError):
        return None
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return param_value(node)


def current_keys(
    suites: Iterable[Suite],
    profile: str,
    overrides: Mapping[str, Any] | None = None,
    runs: pandas.DataFrame | None = None,
) -> dict[str, set[str]]:
    """{suite name: the run keys its file gives `profile` now, `overrides` applied}, for the suites
    that have `profile`: at the profile's seeds and up to the highest seed of the suite's `runs`
    (the seeds `run --until-decided` adds)."""
    from harness.suite import SuiteError, expand, profile_seeds, with_seeds

    keys = {}
    for suite in suites:
        if profile not in suite.profile_names():
            continue
        seeds = profile_seeds(suite, profile)
        if runs is not None and len(runs):
            held = [int(s) for s in runs.loc[runs["suite"] == suite.name, "seed"] if str(s).isdigit()]
            extra = max([s - max(seeds) for s in held if s > max(seeds)], default=0)
            suite = with_seeds(suite, profile, len(seeds) + extra)
        try:
            keys[suite.name] = {spec.key for spec in expand(suite, profile, overrides)}
        except SuiteError:  # e.g. an override the suite cannot take: its runs are all kept
            continue
    return keys


def without_older_configs(
    runs: pandas.DataFrame, profile: str, current: Mapping[str, set[str]]
) -> tuple[pandas.DataFrame, list[str]]:
    """`runs` without `profile`'s runs of a suite in `current` ({suite: `current_keys`}) whose key
    its file no longer gives (made by an earlier version of the suite file or of the benchmark), so
    that no cell mixes versions and a row not yet run again reads missing; and notes counting them.
    A suite none of whose finished runs has a current key keeps them all (a store made before its
    file changed, not yet run again), with a note saying so. Runs of other suites are kept."""
    import pandas

    if not len(runs):
        return runs, []
    notes, keep = [], pandas.Series(True, index=runs.index)
    finished = (runs["status"] == "FINISHED") & (runs["profile"] == profile)
    for suite, keys in current.items():
        of_suite = (runs["suite"] == suite) & (runs["profile"] == profile)
        older = of_suite & ~runs["run_key"].isin(list(keys))
        count = int((older & finished).sum())
        if not count:
            continue
        if (of_suite & ~older & finished).any():
            keep &= ~older
            notes.append(
                f"{count} finished run(s) of {suite} with a config its suite file no longer gives (an "
                "earlier version of the suite or the benchmark) were left out"
            )
        else:
            notes.append(
                f"none of the {count} finished runs of {suite} has a config its suite file gives now (an "
                "earlier version of the suite or the benchmark): they are shown; run the suite again to "
                "replace them"
            )
    return runs[keep], notes


def select(runs: pandas.DataFrame, profile: str, cell: list[str]) -> RunSelection:
    """Keep `profile`'s FINISHED runs: the newest per run key, then the newest per (cell, seed).

    `cell` names the columns that place a run in the report. Two runs of one cell and seed
    but different keys come from an edited suite (same label, new config): the newer wins,
    and a note says how many older ones were left out. Cells whose runs all failed or are
    still running get a note too (they show as missing).
    """
    if not len(runs):
        return RunSelection(runs)
    finished = runs[runs["status"] == "FINISHED"]
    counts = finished["profile"].value_counts().to_dict()
    other = {name: int(n) for name, n in counts.items() if name != profile}
    mine = runs[runs["profile"] == profile].sort_values("start_time", ascending=False, kind="stable")
    cell = [c for c in cell if c in runs]
    done = mine[mine["status"] == "FINISHED"].drop_duplicates("run_key")
    newest = done.drop_duplicates([*cell, "seed"])
    notes = []
    if len(newest) < len(done):
        notes.append(
            f"{len(done) - len(newest)} older run(s) with the same row label and seed but another config "
            "were left out (the newest wins)"
        )
    have = set(newest[cell].itertuples(index=False, name=None))
    for key, group in mine[mine["status"] != "FINISHED"].groupby(cell, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        if key in have:
            continue
        states = ", ".join(f"{n} {s.lower()}" for s, n in group["status"].value_counts().items())
        params = [(c, v) for c, v in zip(cell, key, strict=True) if c.startswith(PARAM_PREFIX)]
        extra = "".join(f", {c.removeprefix(PARAM_PREFIX)}={v}" for c, v in params)
        newest_id = group["run_id"].iloc[0]
        label = group["label" if "label" in group else "row"].iloc[0]  # the suite's full label
        notes.append(f"'{label}'{extra}: no finished run ({states}; newest: MLflow run {newest_id})")
    return RunSelection(newest.reset_index(drop=True), other, notes)
