"""Aggregate runs over seeds and lay them out beside the paper's numbers."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from harness.report.layouts import METRICS, TableLayout, normalize
from harness.report.reference import ReferenceCell

if TYPE_CHECKING:
    import pandas

#: Columns of the long table every renderer reads (one line per cell).
LONG_COLUMNS = ("section", "row", "column_group", "column", "mean", "std", "n", "paper", "delta")
CELL = ["section", "column_group", "row"]


def place_runs(layout: TableLayout, runs: pandas.DataFrame) -> tuple[pandas.DataFrame, list[str]]:
    """Add the cell coordinates (section, column_group, row) from each run's row label.

    Runs whose label does not split into the layout's parts are dropped; the notes name them.
    """
    placed = [layout.place(label) for label in runs["row"]] if len(runs) else []
    keep = [cell is not None for cell in placed]
    bad = sorted({label for label, ok in zip(runs["row"], keep, strict=True) if not ok}) if len(runs) else []
    notes = [
        f"run label {label!r} does not name a cell of {layout.name} "
        f"(expected {layout.label_hint()}); left out"
        for label in bad
    ]
    runs = runs[keep].copy() if len(runs) else runs.copy()
    runs["label"] = runs["row"]  # the suite's full label, for notes; "row" becomes the paper's row
    for key in CELL:
        runs[key] = [cell[key] for cell in placed if cell is not None]
    return runs, notes


def aggregate(runs: pandas.DataFrame, by: list[str], metrics: list[str]) -> pandas.DataFrame:
    """Mean, sample std and count over seeds of each metric per group: columns `<metric>`, `_std`, `_n`.

    A run without a metric does not count towards that metric's n (missing is never zero).
    """
    import pandas

    frame = runs.copy()
    for metric in metrics:
        if metric not in frame:
            frame[metric] = math.nan
        frame[metric] = pandas.to_numeric(frame[metric], errors="coerce")
    grouped = frame.groupby(by, sort=False)[metrics]
    out = grouped.mean()
    out = out.join(grouped.std(ddof=1).add_suffix("_std")).join(grouped.count().add_suffix("_n"))
    return out.reset_index()


def build_table(
    layout: TableLayout, runs: pandas.DataFrame, reference: list[ReferenceCell]
) -> pandas.DataFrame:
    """The long table: one line per (section, row, column_group, column) with LONG_COLUMNS.

    Rows come in the paper's order; a row only our runs have (the miniature's floor, a user's
    method) goes at the end of its section, in label order, or in a section of its own after the
    paper's. Every row gets every column group and metric; a cell without runs has n = 0 and a NaN
    mean.
    """
    import pandas

    metric_names = [METRICS[column] for column in layout.metrics]
    stats = aggregate(runs, CELL, metric_names) if len(runs) else None

    # Paper spelling wins for display; matching is on normalized text.
    rows: dict[tuple[str, str], tuple[str, str]] = {}
    groups: dict[str, str] = {}
    paper: dict[tuple[str, str, str, str], float] = {}
    for cell in reference:
        key = (normalize(cell.section), normalize(cell.row))
        rows.setdefault(key, (cell.section, cell.row))
        groups.setdefault(normalize(cell.column_group), cell.column_group)
        paper[(*key, normalize(cell.column_group), cell.column)] = cell.value
    ours: dict[tuple[str, str, str], dict] = {}
    if stats is not None:
        extra = stats.sort_values(["section", "row"], kind="stable")
        for line in extra.to_dict("records"):
            key = (normalize(line["section"]), normalize(line["row"]))
            rows.setdefault(key, (line["section"], line["row"]))
            groups.setdefault(normalize(line["column_group"]), line["column_group"])
            ours[(*key, normalize(line["column_group"]))] = line

    sections: dict[str, list[tuple[str, str]]] = {}  # section -> its rows' keys, in order
    for key in rows:
        sections.setdefault(key[0], []).append(key)
    lines = []
    for key in (key for keys in sections.values() for key in keys):
        section, row = rows[key]
        for group_key, group in groups.items():
            found = ours.get((*key, group_key), {})
            for column, metric in zip(layout.metrics, metric_names, strict=True):
                n = int(found.get(metric + "_n", 0))
                mean = found.get(metric, math.nan) if n else math.nan
                std = found.get(metric + "_std", math.nan) if n > 1 else math.nan
                ref = paper.get((*key, group_key, column), math.nan)
                lines.append((section, row, group, column, mean, std, n, ref, mean - ref))
    return pandas.DataFrame(lines, columns=list(LONG_COLUMNS))
