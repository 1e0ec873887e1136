"""The reference CSVs hold exactly the numbers of the paper's Tables 1-4, and reports show them.

The paper's markdown (`../shared/paper/shapeprop-paper.md`, or $SHAPEPROP_PAPER) is re-parsed
here, independently of the CSVs: tab-separated blocks, identified by the caption that follows.
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path

import pandas
import pytest

from harness.report.layouts import TABLES
from harness.report.reference import REFERENCE_DIR, load_reference
from harness.report.render import display
from harness.report.tables import build_table
from tests.helpers import ROOT

REPO = ROOT
PAPER = Path(os.environ.get("SHAPEPROP_PAPER", REPO.parent / "shared" / "paper" / "shapeprop-paper.md"))
METRIC = re.compile(r"^AP(50|75|[SML])?$")


def clean(cell: str) -> str:
    """The paper's text without markup and citations: '<b>Mask<sup>X</sup> R-CNN [15]</b>' -> 'Mask^X R-CNN'."""
    cell = re.sub(r"\s*<sup>(.*?)</sup>", r"^\1", cell)
    cell = re.sub(r"</?(b|sub)>", "", cell)
    cell = re.sub(r"\s*\[\d+\]", "", cell)
    cell = cell.replace("$\\rightarrow$", "->")
    return " ".join(cell.split())


def metric_name(header: str) -> str | None:
    name = clean(header).replace(" ", "")
    if not METRIC.match(name):
        return None
    return name[:2] + name[2:].lower()  # APS -> APs, AP50 stays


def paper_blocks(text: str) -> dict[str, list[list[str]]]:
    """{"table1": rows of tab-separated cells, ...} for every table followed by a "Table N:" caption."""
    blocks, current = {}, []
    for line in text.splitlines():
        if "\t" in line:
            current.append(line.split("\t"))
            continue
        caption = re.match(r"Table (\d):", line)
        if caption and current:
            blocks[f"table{caption.group(1)}"] = current
        if line.strip():
            current = []
    return blocks


def paper_cells(table: str, rows: list[list[str]]) -> dict[tuple[str, str, str, str], float | None]:
    """{(section, row, column_group, column): value} as the paper prints it (None: no number)."""
    header_count = next(i for i, r in enumerate(rows) if any(re.fullmatch(r"[\d.]+", clean(c)) for c in r))
    headers, data = rows[:header_count], rows[header_count:]
    metrics = [metric_name(h) for h in headers[-1]]
    groups, group = [], ""
    for cell in headers[0] if header_count > 1 else [""] * len(headers[-1]):
        group = clean(cell.split(":")[0]) if cell.strip() else group
        groups.append(group)
    keys = metrics.index(next(m for m in metrics if m))  # section and row columns come first
    cells, section = {}, ""
    for fields in data:
        names = [clean(f) for f in fields[:keys]]
        if keys == 2:
            section = names[0] or section
        row = names[-1]
        if table == "table1":
            # Two known quirks of the markdown (see reports/reference/README.md): the bold "Ours"
            # row shares a line with the "Oracle" label, and the R-101 oracle's line has no label.
            if "(Oracle)" in row:
                row = row[: row.index("(Ours)") + len("(Ours)")]
            elif not row:
                row = "Fully supervised (Oracle)"
        for i, metric in enumerate(metrics):
            if metric and i < len(fields):
                text = clean(fields[i])
                cells[(section if keys == 2 else "", row, groups[i] if keys == 2 else "", metric)] = (
                    float(text) if text else None
                )
    return cells


@pytest.fixture(scope="module")
def paper() -> dict[str, list[list[str]]]:
    if not PAPER.is_file():
        pytest.skip(f"the paper's markdown is not at {PAPER} (set SHAPEPROP_PAPER)")
    return paper_blocks(PAPER.read_text(encoding="utf-8"))


@pytest.mark.parametrize("table", ["table1", "table2", "table3", "table4"])
def test_reference_equals_the_paper(paper, table):
    expected = {key: value for key, value in paper_cells(table, paper[table]).items() if value is not None}
    ours = {(c.section, c.row, c.column_group, c.column): c.value for c in load_reference(table)}
    given = {key: value for key, value in ours.items() if not math.isnan(value)}
    assert given == expected
    counts = {"table1": 10 * 12, "table2": 8 * 6, "table3": 6 * 3, "table4": 6 * 3}
    assert len(given) == counts[table]
    # What the paper does not give is recorded as missing: only Table 1's R-50-FPN oracle.
    missing = {key for key, value in ours.items() if math.isnan(value)}
    if table == "table1":
        assert missing == {
            ("R-50-FPN", "Fully supervised (Oracle)", group, metric)
            for group in ("non-voc -> voc", "voc -> non-voc")
            for metric in ("AP", "AP50", "AP75", "APs", "APm", "APl")
        }
    else:
        assert not missing


def test_the_text_confirms_the_merged_rows(paper):
    """The paper's prose quotes the R-50 'Ours' and baseline numbers and ShapeMask + 2.2 for R-101."""
    cells = {(c.section, c.row, c.column_group, c.column): c.value for c in load_reference("table1")}
    ours = ("R-50-FPN", "Mask R-CNN w/ ShapeProp (Ours)")
    assert cells[(*ours, "non-voc -> voc", "AP")] == 34.4 and cells[(*ours, "voc -> non-voc", "AP")] == 30.4
    r101 = cells[("R-101-FPN", "Mask R-CNN w/ ShapeProp (Ours)", "non-voc -> voc", "AP")]
    assert r101 == pytest.approx(cells[("R-101-FPN", "ShapeMask", "non-voc -> voc", "AP")] + 2.2)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_rendered_paper_numbers_equal_the_reference(name):
    """With no runs at all, every rendered cell shows the paper's number (or 'missing' alone)."""
    layout = TABLES[name]
    reference = load_reference(name)
    empty = pandas.DataFrame(columns=["row", "seed", "section", "column_group"])
    table = build_table(layout, empty, reference)
    assert (table["n"] == 0).all()
    ours_only = table["column"] == "IoU@GT"  # our column: the paper has no number for it
    assert table[ours_only]["paper"].isna().all()
    table = table[~ours_only]
    assert len(table) == len(reference)
    for cell, line in zip(reference, table.to_dict("records"), strict=True):
        assert (line["section"], line["row"], line["column_group"], line["column"]) == (
            cell.section,
            cell.row,
            cell.column_group,
            cell.column,
        )
        assert line["paper"] == cell.value or (math.isnan(line["paper"]) and math.isnan(cell.value))
    # The rendered text carries the same numbers: "missing (21.6)".
    grid = display(table, layout, flat=True)
    text = io.StringIO()
    grid.to_csv(text, index=False)
    shown = [float(x) for x in re.findall(r"missing \(([\d.]+)\)", text.getvalue())]
    assert sorted(shown) == sorted(c.value for c in reference if not math.isnan(c.value))


def test_reference_files_are_the_only_ones():
    assert sorted(p.name for p in REFERENCE_DIR.glob("*.csv")) == [f"table{n}.csv" for n in range(1, 5)]
