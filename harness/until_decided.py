"""`run --until-decided`: add seeds, in rounds, to the rows of the claims still undecided.

The rounds follow a group-sequential design (`harness.report.inference.Sequential`): looks at the
profile's seeds, then every `step` seeds more, up to `max_seeds`, each look testing at the level
that alpha spending gives it, so that looking after every round does not inflate the error rate.
A claim decided at a look stops there: its rows get no seeds for it, and the report judges it on
the seeds of that look. The design, with the looks at which claims stopped, is kept on the suite's
MLflow experiment (tag `claims.sequential.<profile>`), where `report --claims` finds it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.report.claims import UNDECIDED
from harness.report.inference import Sequential
from harness.suite import with_seeds
from harness.tracking import ensure_experiment, experiment_name

if TYPE_CHECKING:
    import pandas

    from harness.suite import Suite

DESIGN_TAG = "claims.sequential"


def read_design(client: Any, suite: str, profile: str) -> Sequential | None:
    """The sequential design the suite's `profile` was run under, if any."""
    experiment = client.get_experiment_by_name(experiment_name(suite))
    raw = experiment.tags.get(f"{DESIGN_TAG}.{profile}") if experiment is not None else None
    return Sequential(**json.loads(raw)) if raw else None


def write_design(client: Any, suite: str, profile: str, design: Sequential) -> None:
    experiment_id = ensure_experiment(client, experiment_name(suite))
    client.set_experiment_tag(
        experiment_id, f"{DESIGN_TAG}.{profile}", json.dumps(dataclasses.asdict(design))
    )


def exact(label: str) -> str:
    """An `--only` pattern matching this row label and no other (a glob, not a substring)."""
    return "".join(f"[{c}]" if c in "*?[" or i == 0 else c for i, c in enumerate(label))


def claim_key(line: dict) -> str:
    return f"{line['claim']}|{line['by']}"


def until_decided(
    suite: Suite,
    profile: str,
    design: Sequential,
    judge: Callable[[Sequential], pandas.DataFrame],
    run_round: Callable[[Suite, list[str]], Any],
    save: Callable[[Sequential], None],
    echo: Callable[[str], None] = print,
) -> Sequential:
    """Look, stop the decided claims, add seeds to the rows of the others; again until every claim
    is decided or at `max_seeds`. `judge(design)`: the suite's judged claim lines from the store;
    `run_round(suite, rows)`: run those rows at the suite's seeds; `save`: keep the design."""
    asked = 0  # the seeds the last round ran the pending rows to
    while True:
        lines = judge(design)
        primary = lines[lines["primary"] & (lines["n"] >= 2)]
        stopped = dict(design.stopped)
        for line in primary.to_dict("records"):
            if line["verdict"] != UNDECIDED and claim_key(line) not in stopped:
                stopped[claim_key(line)] = int(line["n"])
                echo(f"decided at {line['n']} seeds: {claim_key(line).rstrip('|')}: {line['verdict']}")
        design = dataclasses.replace(design, stopped=stopped)
        save(design)
        undecided = lines[lines["primary"] & (lines["verdict"] == UNDECIDED)]
        pending = undecided[undecided["n"] < design.max_seeds]
        if not len(pending):
            echo(f"{len(stopped)} claim(s) decided, {len(undecided)} undecided at {design.max_seeds} seeds")
            return design
        seeds = int(pending["n"].min())
        if seeds < asked:
            echo(f"the last round did not bring every row to {asked} seeds (failed runs?): stopping")
            return design
        asked = min([n for n in design.looks() if n > seeds] or [design.max_seeds])
        rows = sorted(set(pending["ours"]) | set(pending["baseline"]))
        echo(f"{len(pending)} claim(s) undecided at {seeds} seeds: {asked} seeds for {len(rows)} row(s)")
        run_round(with_seeds(suite, profile, asked), rows)
