"""The paper's published numbers (`reports/reference/<table>.csv`), one line per table cell."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

#: Default location: `reports/reference/` at the repository root (the package is installed editable).
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "reports" / "reference"

COLUMNS = ("table", "section", "row", "column_group", "column", "value")


@dataclass(frozen=True)
class ReferenceCell:
    """One number of a paper table; `value` is NaN where the paper gives none."""

    section: str
    row: str
    column_group: str
    column: str
    value: float


def load_reference(table: str, directory: str | Path | None = None) -> list[ReferenceCell]:
    """Read the reference cells of `table` (e.g. "table2") in file order.

    Raises ValueError naming the file and line for a wrong header, a line of another
    table, or a value that is neither a number nor empty; FileNotFoundError if absent.
    """
    path = Path(directory or REFERENCE_DIR) / f"{table}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no reference numbers for {table}: {path} does not exist")
    cells: list[ReferenceCell] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header) != COLUMNS:
            raise ValueError(f"{path}:1: header must be {','.join(COLUMNS)}, got {header}")
        for line, fields in enumerate(reader, start=2):
            if len(fields) != len(COLUMNS):
                raise ValueError(f"{path}:{line}: expected {len(COLUMNS)} fields, got {len(fields)}")
            name, section, row, group, column, text = fields
            if name != table:
                raise ValueError(f"{path}:{line}: table is {name!r}, expected {table!r}")
            try:
                value = float(text) if text.strip() else math.nan
            except ValueError:
                raise ValueError(
                    f"{path}:{line}: value {text!r} is not a number (leave it empty if missing)"
                ) from None
            cells.append(ReferenceCell(section, row, group, column, value))
    return cells
