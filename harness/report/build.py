"""Build one report end to end: MLflow runs -> seeds aggregated -> files under `out_dir` -> MLflow artifact."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.report import claims, figures, render
from harness.report.layouts import TABLES
from harness.report.reference import load_reference
from harness.report.runs import (
    REPORTS_EXPERIMENT,
    RunSelection,
    current_keys,
    fetch_runs,
    select,
    without_older_configs,
)
from harness.report.tables import build_table, place_runs
from harness.suite import SUITES_DIR, Suite, SuiteError, find_suite_file, load_suite
from harness.targets import target
from harness.until_decided import read_design
from shapeprop.files import write_atomic

if TYPE_CHECKING:
    import pandas


@dataclass
class Report:
    """What a report produced: its name (e.g. "table2"), files written, the data behind them."""

    name: str
    profile: str
    files: list[Path]
    data: pandas.DataFrame
    notes: list[str] = field(default_factory=list)
    mlflow_run_id: str | None = None


def _profile_notes(selection: RunSelection, profile: str) -> list[str]:
    if len(selection.runs) or not selection.other_profiles:
        return []
    found = ", ".join(f"{name} ({n} runs)" for name, n in sorted(selection.other_profiles.items()))
    return [f"no finished runs of profile '{profile}'; the store has profile(s) {found}: use --profile"]


def _loaded(path: str | Path) -> Suite | None:
    """The suite a name or file names, None if there is none or it no longer loads."""
    try:
        return load_suite(find_suite_file(path))
    except SuiteError:
        return None


def _current_runs(
    client, reproduces: str, profile: str, suite: str | None, overrides: dict | None
) -> tuple[pandas.DataFrame, list[str]]:
    """The runs of `reproduces` (`fetch_runs`; `suite`, a name or file: its runs only) less those of
    an earlier config of their suite file (`without_older_configs`), and the notes that say so. The
    suite files that say which keys are current: `suite`, else those under suites/ that reproduce
    `reproduces`; the runs of a suite the report cannot load are all kept."""
    given = _loaded(suite) if suite is not None else None
    fetched = fetch_runs(client, reproduces, given.name if given else suite, overrides)
    if suite is not None:
        files = [given] if given else []
    else:
        files = [s for s in map(_loaded, sorted(SUITES_DIR.glob("*.yaml"))) if s is not None]
    files = [s for s in files if s.reproduces == reproduces]
    return without_older_configs(fetched, profile, current_keys(files, profile, overrides, fetched))


def table_report(
    number: int,
    client,
    profile: str = "full",
    out_dir: str | Path = "reports",
    suite: str | None = None,
    reference_dir: str | Path | None = None,
    console=None,
    overrides: dict | None = None,
) -> Report:
    """Render paper Table `number` (1-4) from the finished runs of `profile` (whose config has
    `overrides`, the `--set` values, when given).

    Writes `<out_dir>/table<N>-<profile>.{md,tex,html,csv}` and prints the table.
    """
    name = target("table", number).name
    layout = TABLES[name]
    reference = load_reference(name, reference_dir)
    fetched, older = _current_runs(client, name, profile, suite, overrides)
    runs, notes = place_runs(layout, fetched)
    selection = select(runs, profile, ["section", "column_group", "row"])
    notes += older + selection.notes + _profile_notes(selection, profile)
    table = build_table(layout, selection.runs, reference)

    title = f"Table {number} ({profile} profile)"
    base = Path(out_dir) / f"{name}-{profile}"
    files = [
        write_atomic(Path(f"{base}.md"), render.to_markdown(table, layout, title, notes)),
        write_atomic(Path(f"{base}.tex"), render.to_latex(table, layout, title)),
        write_atomic(Path(f"{base}.html"), render.to_html(table, layout, title, notes)),
        write_atomic(Path(f"{base}.csv"), render.to_csv(table, {"table": name, "profile": profile})),
    ]
    render.print_terminal(table, layout, title, notes, console)
    return Report(name, profile, files, table, notes)


def figure_report(
    number: int,
    client,
    profile: str = "full",
    out_dir: str | Path = "reports",
    suite: str | None = None,
    console=None,
    overrides: dict | None = None,
) -> Report:
    """Render Figure 6 (data fractions) or 9 (best overlap) as PNG + SVG, with its data as CSV."""
    name = target("figure", number).name
    keys, draw = _FIGURES[name]
    fetched, older = _current_runs(client, name, profile, suite, overrides)
    selection = select(fetched, profile, keys)
    notes = older + selection.notes + _profile_notes(selection, profile)
    base, title = Path(out_dir) / f"{name}-{profile}", f"Figure {number} ({profile} profile)"
    data, files, more = draw(client, selection.runs, title, base)
    notes += more
    files.append(write_atomic(Path(f"{base}.csv"), data.to_csv(index=False, float_format="%.4f")))
    _print_frame(data, title, notes, console)
    return Report(name, profile, files, data, notes)


def _figure6(client, runs: pandas.DataFrame, title: str, base: Path):
    data = figures.fraction_points(runs)
    return data, figures.figure6(data, title, base), []


def _figure9(client, runs: pandas.DataFrame, title: str, base: Path):
    overlaps, missing = _best_overlaps(client, runs)
    notes = [f"run {run_id} has no best_overlap.csv artifact; left out" for run_id in missing]
    return figures.overlap_summary(overlaps), figures.figure9(overlaps, title, base), notes


#: Per figure target: what makes one of its points (the selection's keys), and how it is drawn:
#: draw(client, runs, title, base) -> (its data, files written, notes).
_FIGURES = {"figure6": (["row", figures.FRACTION_PARAM], _figure6), "figure9": (["row"], _figure9)}


def claims_report(
    client,
    profile: str = "full",
    out_dir: str | Path = "reports",
    suite: str | None = None,
    console=None,
    overrides: dict | None = None,
) -> Report:
    """Test the claims of the suite files (`suite` only, when given) on the FINISHED runs of `profile`.

    Writes `<out_dir>/claims.md` and `<out_dir>/claims.csv` and prints the comparisons.
    """
    import pandas

    data, notes = judged_claims(client, claims.claim_suites(suite), profile, overrides)
    title = f"The paper's claims, tested ({profile} profile)"
    out = Path(out_dir)
    files = [
        write_atomic(out / "claims.md", claims.to_markdown(data, title, notes)),
        write_atomic(
            out / "claims.csv", data.assign(profile=profile).to_csv(index=False, float_format="%.4f")
        ),
    ]
    text = pandas.DataFrame([claims.text_cells(line) for line in data.to_dict("records")])
    _print_frame(
        text.set_axis(list(claims.TEXT_COLUMNS), axis=1) if len(text) else text, title, notes, console
    )
    return Report("claims", profile, files, data, notes)


def judged_claims(client, suites, profile: str, overrides: dict | None = None, design=None):
    """The claims of `suites` on the store's FINISHED runs of `profile`, judged: (lines, notes).
    `design(suite)`: the sequential design to judge a suite under (default: the one in the store)."""

    with tempfile.TemporaryDirectory() as tmp:
        tables: dict[tuple[str, str], pandas.DataFrame | None] = {}
        listed: dict[str, set[str]] = {}

        def read_table(run_id: str, file: str) -> pandas.DataFrame | None:
            if run_id not in listed:  # one listing per run: most claims ask for tables a run lacks
                listed[run_id] = {a.path for a in client.list_artifacts(run_id)}
            if (run_id, file) not in tables:
                present = file in listed[run_id]
                tables[run_id, file] = _artifact_table(client, run_id, file, tmp) if present else None
            return tables[run_id, file]

        def fetch(s) -> pandas.DataFrame:
            return fetch_runs(client, s.reproduces or "", s.name, overrides)

        def stored_design(s):
            return read_design(client, s.name, profile)

        return claims.evaluate(suites, fetch, profile, read_table, design or stored_design, overrides)


def _artifact_table(client, run_id: str, file: str, tmp: str) -> pandas.DataFrame | None:
    """A run's CSV artifact, or None if it has none."""
    import pandas
    from mlflow.exceptions import MlflowException

    try:
        return pandas.read_csv(client.download_artifacts(run_id, file, tmp))
    except (MlflowException, OSError):
        return None


def _best_overlaps(client, runs: pandas.DataFrame) -> tuple[pandas.DataFrame, list[str]]:
    """The best-overlap tables of `runs`, concatenated with a `row` column; and the runs without one."""
    import pandas
    from mlflow.exceptions import MlflowException

    frames, missing = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run_id, row in zip(runs["run_id"], runs["row"], strict=True):
            try:
                path = client.download_artifacts(run_id, "best_overlap.csv", tmp)
            except (MlflowException, OSError):
                missing.append(run_id)
                continue
            frame = pandas.read_csv(path)
            absent = set(figures.OVERLAP_COLUMNS) - set(frame.columns)
            if absent:
                raise ValueError(f"best_overlap.csv of run {run_id} lacks columns {sorted(absent)}")
            frames.append(frame.assign(row=row, run_id=run_id))
    columns = ["row", "run_id", *figures.OVERLAP_COLUMNS]
    overlaps = pandas.concat(frames, ignore_index=True) if frames else pandas.DataFrame(columns=columns)
    return overlaps, missing


def _print_frame(data: pandas.DataFrame, title: str, notes: list[str], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    rows = [
        ["missing" if _isnan(v) else f"{v:.2f}" if isinstance(v, float) else str(v) for v in values]
        for values in data.itertuples(index=False)
    ]
    if not console.is_terminal:  # a file or a pipe: Markdown, whatever its width
        lines = [
            f"# {title}",
            "",
            "| " + " | ".join(map(str, data.columns)) + " |",
            "|" + "---|" * data.shape[1],
        ]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
        console.file.write("\n".join(lines + [""] + [f"- {note}" for note in notes]) + "\n")
        return
    table = Table(title=title)
    for column in data.columns:
        table.add_column(str(column), justify="right", overflow="fold")
    for cells in rows:
        table.add_row(*cells)
    console.print(table)
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def _isnan(value) -> bool:
    return isinstance(value, float) and value != value


def log_report(client, report: Report) -> str:
    """Log the report's files as artifacts of a run in experiment `shapeprop-bench/reports`."""
    from harness.tracking import ensure_experiment

    experiment_id = ensure_experiment(client, REPORTS_EXPERIMENT)
    tags = {"kind": "report", "report": report.name, "profile": report.profile}
    run = client.create_run(experiment_id, tags=tags, run_name=f"{report.name}-{report.profile}")
    try:
        for path in report.files:
            client.log_artifact(run.info.run_id, str(path))
    except BaseException:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id)
    report.mlflow_run_id = run.info.run_id
    return run.info.run_id
