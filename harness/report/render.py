"""Render a long table (harness.report.tables.LONG_COLUMNS) as terminal, Markdown, LaTeX, HTML and CSV.

A cell reads "ours ± std (paper, Δ)"; a cell without runs reads "missing", never 0.
Files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import html
import math
import re
from typing import TYPE_CHECKING

from harness.report.layouts import TableLayout

if TYPE_CHECKING:
    import pandas

MISSING = "missing"


def _num(value: float, latex: bool = False) -> str:
    text = f"{value:.1f}"
    return text.replace("-", "$-$", 1) if latex and value < 0 else text


def format_cell(mean: float, std: float, n: int, paper: float, style: str = "text") -> str:
    """One cell's text; `style` is "text" (terminal, Markdown, HTML) or "latex"."""
    latex = style == "latex"
    pm = " $\\pm$ " if latex else " ± "
    delta = "$\\Delta$" if latex else "Δ"
    ours = MISSING if n == 0 or math.isnan(mean) else _num(mean, latex)
    if n > 1 and not math.isnan(std):
        ours += pm + _num(std, latex)
    if math.isnan(paper):
        return ours
    if ours == MISSING:
        return f"{MISSING} ({_num(paper, latex)})"
    sign = "+" if mean - paper >= 0 else ""
    return f"{ours} ({_num(paper, latex)}, {delta} {sign}{_num(mean - paper, latex)})"


def wide(table: pandas.DataFrame, layout: TableLayout, style: str = "text") -> pandas.DataFrame:
    """Paper layout: index (section, row), columns (column_group, metric) plus an `n` per group."""
    import pandas

    rows = list(dict.fromkeys(zip(table["section"], table["row"], strict=True)))
    groups = list(dict.fromkeys(table["column_group"]))
    columns = [(g, c) for g in groups for c in [*layout.metrics, "n"]]
    grid = {key: {column: "" for column in columns} for key in rows}
    for line in table.to_dict("records"):
        cells = grid[(line["section"], line["row"])]
        text = format_cell(line["mean"], line["std"], line["n"], line["paper"], style)
        cells[(line["column_group"], line["column"])] = text
        # n counts runs of the cell's first metric (AP); every metric of a finished run is logged.
        if line["column"] == layout.metrics[0]:
            cells[(line["column_group"], "n")] = str(line["n"])
    return pandas.DataFrame(
        [[grid[key][column] for column in columns] for key in rows],
        index=pandas.MultiIndex.from_tuples(rows, names=["section", "row"]),
        columns=pandas.MultiIndex.from_tuples(columns),
    )


def display(
    table: pandas.DataFrame, layout: TableLayout, style: str = "text", flat: bool = False
) -> pandas.DataFrame:
    """The paper's layout as plain columns: section (shown once per block, if the table has
    sections), row, then the metric columns, grouped under their column group when there are
    several (or joined into one header with `flat`)."""
    import pandas

    grid = wide(table, layout, style)
    groups = list(dict.fromkeys(g for g, _ in grid.columns))
    two_levels = not flat and len(groups) > 1
    pad = ("",) if two_levels else ()
    data: dict = {}
    if layout.section_title:
        sections = grid.index.get_level_values("section")
        shown = [s if i == 0 or s != sections[i - 1] else "" for i, s in enumerate(sections)]
        data[(layout.section_title, *pad)] = shown
    data[(layout.row_title, *pad)] = list(grid.index.get_level_values("row"))
    for group, column in grid.columns:
        if two_levels:
            key = (group, column)
        else:
            key = (f"{group} {column}".strip() if len(groups) > 1 else column,)
        data[key] = list(grid[(group, column)])
    out = pandas.DataFrame(data)
    out.columns = pandas.MultiIndex.from_tuples(data) if two_levels else [k[0] for k in data]
    return out


def to_markdown(table: pandas.DataFrame, layout: TableLayout, title: str, notes: list[str]) -> str:
    """A GitHub-flavoured Markdown table in the paper's layout (column groups joined into the headers)."""
    grid = display(table, layout, flat=True)
    lines = [f"# {title}", "", layout.caption, ""]
    lines += ["| " + " | ".join(grid.columns) + " |", "|" + "---|" * grid.shape[1]]
    for values in grid.itertuples(index=False):
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in values) + " |")
    lines += [
        "",
        "Cells: ours, mean ± std over n seeds (paper, Δ = ours − paper); missing = no finished run.",
    ]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_"}
    special |= {"{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    text = "".join(special.get(ch, ch) for ch in text)
    text = re.sub(r"\\textasciicircum\{\}(\w)", r"$^{\1}$", text)  # Mask^X -> Mask$^{X}$
    return text.replace("->", r"$\rightarrow$")


def to_latex(table: pandas.DataFrame, layout: TableLayout, title: str) -> str:
    """A booktabs `table` environment (needs \\usepackage{booktabs})."""
    grid = display(table, layout, style="latex")
    labels = list(grid.columns) if grid.columns.nlevels == 1 else None
    if labels is not None:
        grid.columns = [_latex_escape(c) for c in labels]
    else:
        grid.columns = grid.columns.map(lambda key: tuple(_latex_escape(k) for k in key))
    # Row and section names are escaped; cells were formatted for LaTeX already.
    for column in grid.columns[: 2 if layout.section_title else 1]:
        grid[column] = grid[column].map(_latex_escape)
    keys = 2 if layout.section_title else 1
    body = grid.style.hide(axis="index").to_latex(
        hrules=True, multicol_align="c", column_format="l" * keys + "r" * (grid.shape[1] - keys)
    )
    caption = _latex_escape(f"{title}. {layout.caption}")
    caption += r" Cells: ours (paper, $\Delta$)."
    return "\\begin{table}\n\\centering\n\\small\n" + body + f"\\caption{{{caption}}}\n\\end{{table}}\n"


def to_html(table: pandas.DataFrame, layout: TableLayout, title: str, notes: list[str]) -> str:
    """A standalone HTML page holding the table."""
    grid = display(table, layout)
    body = grid.to_html(index=False, escape=True, border=0, classes="report")
    notes_html = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif} table.report{border-collapse:collapse} "
        "table.report td,table.report th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
        f"</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(layout.caption)} Cells: ours ± std (paper, Δ); missing = no finished run.</p>\n"
        f"{body}\n<ul>{notes_html}</ul></body></html>\n"
    )


def to_csv(table: pandas.DataFrame, extra: dict[str, str]) -> str:
    """The long table as CSV, one line per cell, `extra` columns (table, profile) first."""
    frame = table.copy()
    for position, (key, value) in enumerate(extra.items()):
        frame.insert(position, key, value)
    return frame.to_csv(index=False, float_format="%.4f", lineterminator="\n")


def print_terminal(
    table: pandas.DataFrame, layout: TableLayout, title: str, notes: list[str], console=None
) -> None:
    """Print with rich on a terminal: one table per column group so that wide tables stay readable,
    cells wrapped, never cut. To a file or a pipe: the Markdown table, whatever its width."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if not console.is_terminal:
        console.file.write(to_markdown(table, layout, title, notes))
        return
    grid = wide(table, layout)
    groups = list(dict.fromkeys(g for g, _ in grid.columns))
    for group in groups:
        heading = f"{title} — {group}" if group else title
        out = Table(title=heading, caption=layout.caption, show_lines=False)
        if layout.section_title:
            out.add_column(layout.section_title, overflow="fold")
        out.add_column(layout.row_title, overflow="fold")
        for column in [*layout.metrics, "n"]:
            out.add_column(column, justify="right", overflow="fold")
        previous = None
        for (section, row), values in grid.iterrows():
            cells = [values[(group, column)] for column in [*layout.metrics, "n"]]
            first = [section if section != previous else ""] if layout.section_title else []
            previous = section
            out.add_row(*first, row, *cells)
        console.print(out)
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}")
