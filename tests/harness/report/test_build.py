"""Reports rendered from a real MLflow store (SQLite) filled with runs in the tracking contract's layout.

The tests choose the metric values; the store, its tags, params, metrics and artifacts are real.
Checks: seed aggregation (mean, std, n), missing vs zero, which runs count (FINISHED child runs of
the profile, newest per key), the paper's numbers and differences, every output format, figures.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import statistics
import tempfile
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from PIL import Image

from harness.cli.report import report
from harness.report import figures
from harness.report.build import figure_report, table_report
from harness.report.layouts import TABLES
from harness.report.reference import load_reference
from harness.report.tables import build_table
from harness.suite import expand, load_suite, with_seeds
from tests.helpers.report_store import (
    BASELINE_AP,
    FRACTIONS,
    T4_MORE_BOXES_SP,
    Store,
    best_overlap_csv,
    fig6_ap,
    fill,
    quiet,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # SQLite commits each write to disk; on a RAM disk the ~40 runs below log 4x faster.
    ram = Path("/dev/shm")
    if ram.is_dir() and os.access(ram, os.W_OK):
        root = Path(tempfile.mkdtemp(dir=ram, prefix="report-store-"))
    else:
        root = tmp_path_factory.mktemp("store")
    try:
        yield fill(Store(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def cells(data, **fixed):
    """{(row, column): line} of a report's long table, restricted to `fixed` columns."""
    out = {}
    for line in data.to_dict("records"):
        if all(line[k] == v for k, v in fixed.items()):
            out[(line["row"], line["column"])] = line
    return out


# --------------------------------------------------------------------------- tables


def test_table4_aggregates_seeds_and_keeps_missing_apart_from_zero(store, tmp_path):
    rep = table_report(4, store.client, "mini", tmp_path, console=quiet())
    got = cells(rep.data)
    base = got[("baseline", "AP")]
    assert base["n"] == 3
    assert base["mean"] == pytest.approx(statistics.mean(BASELINE_AP))
    assert base["std"] == pytest.approx(statistics.stdev(BASELINE_AP))
    assert base["paper"] == 21.6
    assert base["delta"] == pytest.approx(statistics.mean(BASELINE_AP) - 21.6)
    assert got[("baseline", "AP50")]["mean"] == pytest.approx(statistics.mean(BASELINE_AP) + 20)

    missing = got[("baseline + More head params", "AP")]
    assert missing["n"] == 0 and math.isnan(missing["mean"]) and math.isnan(missing["delta"])
    assert missing["paper"] == 21.4
    failed = [note for note in rep.notes if "no finished run" in note]
    assert len(failed) == 1 and failed[0].startswith(
        "'baseline + More head params': no finished run (1 failed"
    )
    zero = got[("baseline + ShapeProp (Channel-agnostic)", "AP75")]
    assert zero["n"] == 1 and zero["mean"] == 0.0 and zero["delta"] == pytest.approx(-20.5)

    # FAILED and RUNNING runs never count; a re-run of the same key replaces the older one.
    assert got[("baseline + ShapeProp", "AP")]["mean"] == 22.0
    assert got[("baseline + ShapeProp", "AP")]["n"] == 1
    assert got[("baseline + More boxes", "AP")]["mean"] == 24.0
    # Same label and seed but another config: the newest wins, and a note says so.
    assert got[(T4_MORE_BOXES_SP, "AP")]["mean"] == 26.0
    assert got[(T4_MORE_BOXES_SP, "AP")]["n"] == 1
    assert any("older run" in note for note in rep.notes)

    # Paper rows first in the paper's order, then our extra row; a malformed label is named.
    rows = list(dict.fromkeys(rep.data["row"]))
    assert rows == [cell.row for cell in load_reference("table4")][::3] + ["baseline + wider FPN"]
    assert math.isnan(got[("baseline + wider FPN", "AP")]["paper"])
    assert any("'foo | bar'" in note for note in rep.notes)


def test_profile_selects_runs(store, tmp_path):
    full = cells(table_report(4, store.client, "full", tmp_path, console=quiet()).data)
    assert full[("baseline", "AP")]["mean"] == 50.0 and full[("baseline", "AP")]["n"] == 1
    assert full[("baseline + ShapeProp", "AP")]["n"] == 0

    none = table_report(4, store.client, "huge", tmp_path, console=quiet())
    assert (none.data["n"] == 0).all()
    assert any("use --profile" in note and "mini" in note and "full" in note for note in none.notes)


def test_table1_places_runs_by_backbone_direction_and_method(store, tmp_path):
    rep = table_report(1, store.client, "mini", tmp_path, console=quiet())
    data = rep.data
    r50_nv = cells(data, section="R-50-FPN", column_group="non-voc -> voc")
    r50_vn = cells(data, section="R-50-FPN", column_group="voc -> non-voc")
    r101_nv = cells(data, section="R-101-FPN", column_group="non-voc -> voc")

    assert r50_nv[("Mask R-CNN (Baseline)", "AP")]["mean"] == 11.0
    assert r50_nv[("Mask R-CNN (Baseline)", "APl")]["mean"] == 12.0
    assert r50_vn[("Mask R-CNN (Baseline)", "AP")]["mean"] == 8.0
    assert r50_vn[("Mask R-CNN (Baseline)", "AP")]["paper"] == 19.2
    # Matching ignores case and spacing; the paper's spelling is shown.
    assert r50_nv[("Mask R-CNN w/ ShapeProp (Ours)", "AP")]["mean"] == 30.0
    assert r50_nv[("Mask R-CNN w/ ShapeProp (Ours)", "AP")]["delta"] == pytest.approx(30.0 - 34.4)
    assert r101_nv[("Fully supervised (Oracle)", "AP")]["mean"] == 37.0
    assert r101_nv[("Fully supervised (Oracle)", "AP")]["paper"] == 38.5
    # The paper gives no R-50 oracle numbers; ShapeMask is the paper's only.
    assert math.isnan(r50_nv[("Fully supervised (Oracle)", "AP")]["paper"])
    assert r101_nv[("ShapeMask", "AP")]["n"] == 0 and r101_nv[("ShapeMask", "AP")]["paper"] == 33.3
    assert len(data) == 11 * 2 * 7  # 11 paper rows x 2 directions x (6 metrics + IoU@GT), no extra rows
    assert r50_vn[("Mask^X R-CNN", "AP")]["n"] == 0
    assert any(n.startswith("'R-50-FPN | voc -> non-voc | Mask^X R-CNN': no finished run") for n in rep.notes)


def test_a_row_the_paper_lacks_is_shown_in_its_own_section_not_after_the_last():
    import pandas

    layout = TABLES["table1"]
    runs = pandas.DataFrame(
        [
            {"section": section, "column_group": "non-voc -> voc", "row": row, "segm_AP": ap}
            for section, row, ap in [
                ("R-50-FPN", "Mask R-CNN trained w/ box masks", 9.0),  # the miniature's floor
                ("R-50-FPN", "Mask R-CNN (Baseline)", 20.0),
                ("R-18", "Mask R-CNN (Baseline)", 5.0),  # a backbone the paper lacks
            ]
        ]
    )
    table = build_table(layout, runs, load_reference("table1"))
    order = list(dict.fromkeys(zip(table["section"], table["row"], strict=True)))
    r50 = [row for section, row in order if section == "R-50-FPN"]
    assert r50[-1] == "Mask R-CNN trained w/ box masks"  # after the paper's R-50 rows, before R-101's
    assert order.index(("R-50-FPN", "Mask R-CNN trained w/ box masks")) == len(r50) - 1
    assert order[-1] == ("R-18", "Mask R-CNN (Baseline)")
    floor = table[(table["row"] == "Mask R-CNN trained w/ box masks") & (table["column"] == "AP")]
    assert floor["mean"].tolist()[0] == 9.0 and floor["paper"].isna().all()


def test_table2_matches_sections(store, tmp_path):
    data = table_report(2, store.client, "mini", tmp_path, console=quiet()).data
    joint = cells(data, section="BDD100k (7k w/ masks, 67k w/ boxes)")
    alone = cells(data, section="BDD100k-Instseg (7k w/ masks, 7k w/ boxes)")
    assert joint[("Mask R-CNN", "AP")]["mean"] == 24.6
    assert joint[("Mask R-CNN", "AP")]["delta"] == pytest.approx(0.1)
    assert alone[("Mask R-CNN", "AP")]["n"] == 0


class _Rows(HTMLParser):
    """The text of every <td>/<th> cell, row by row."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_every_output_format(store, tmp_path):
    rep = table_report(4, store.client, "mini", tmp_path, console=quiet())
    assert sorted(p.name for p in rep.files) == [f"table4-mini.{x}" for x in ("csv", "html", "md", "tex")]
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in rep.files)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left
    baseline = [
        "baseline",
        "21.3 ± 1.5 (21.6, Δ -0.3)",
        "41.3 ± 1.5 (40.5, Δ +0.8)",
        "20.3 ± 1.5 (20.5, Δ -0.2)",
        "missing",  # IoU@GT: these runs did not log it, and the paper has no such column
        "3",
    ]
    head_params = [
        "baseline + More head params",
        "missing (21.4)",
        "missing (40.3)",
        "missing (19.5)",
        "missing",
        "0",
    ]
    zero = ["baseline + ShapeProp (Channel-agnostic)", "0.0 (22.4, Δ -22.4)", "0.0 (42.0, Δ -42.0)"]

    markdown = (tmp_path / "table4-mini.md").read_text()
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert lines[0] == "| Setting | AP | AP50 | AP75 | IoU@GT | n |"
    assert "| " + " | ".join(baseline) + " |" in lines
    assert "| " + " | ".join(head_params) + " |" in lines
    assert len(lines) == 2 + 7

    page = _Rows()
    page.feed((tmp_path / "table4-mini.html").read_text())
    assert page.rows[0] == ["Setting", "AP", "AP50", "AP75", "IoU@GT", "n"]
    assert baseline in page.rows and head_params in page.rows
    assert any(row[:3] == zero for row in page.rows)

    latex = (tmp_path / "table4-mini.tex").read_text()
    assert "\\begin{tabular}{lrrrrr}" in latex and "\\toprule" in latex and "\\bottomrule" in latex
    assert (
        "baseline & 21.3 $\\pm$ 1.5 (21.6, $\\Delta$ $-$0.3) & 41.3 $\\pm$ 1.5 (40.5, $\\Delta$ +0.8)"
        in latex
    )

    with (tmp_path / "table4-mini.csv").open() as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == 7 * 4
    first = records[0]
    assert (first["table"], first["profile"], first["row"], first["column"]) == (
        "table4",
        "mini",
        "baseline",
        "AP",
    )
    assert float(first["mean"]) == pytest.approx(statistics.mean(BASELINE_AP), abs=1e-4)
    assert float(first["std"]) == pytest.approx(statistics.stdev(BASELINE_AP), abs=1e-4)
    assert (first["n"], first["paper"]) == ("3", "21.6000")
    missing = next(r for r in records if r["row"] == "baseline + More head params")
    assert (missing["mean"], missing["n"], missing["delta"]) == ("", "0", "")


def test_table1_latex_groups_and_escapes(store, tmp_path):
    table_report(1, store.client, "mini", tmp_path, console=quiet())
    latex = (tmp_path / "table1-mini.tex").read_text()
    assert "\\multicolumn{8}{c}{non-voc $\\rightarrow$ voc}" in latex
    assert "Mask$^{X}$ R-CNN" in latex
    page = _Rows()
    page.feed((tmp_path / "table1-mini.html").read_text())
    header = page.rows[1]
    assert header[:2] == ["", ""] and header[2:10] == [
        "AP",
        "AP50",
        "AP75",
        "APs",
        "APm",
        "APl",
        "IoU@GT",
        "n",
    ]
    markdown = (tmp_path / "table1-mini.md").read_text()
    assert "| Backbone | Method | non-voc -> voc AP |" in markdown


# --------------------------------------------------------------------------- figures


def test_figure6_curves(store, tmp_path):
    rep = figure_report(6, store.client, "mini", tmp_path, console=quiet())
    killed = store.killed
    assert sorted(p.name for p in rep.files) == ["figure6-mini.csv", "figure6-mini.png", "figure6-mini.svg"]
    points = {(r["row"], r["data_fraction"]): r for r in rep.data.to_dict("records")}
    assert len(points) == 6
    plain = points[("Mask R-CNN", 0.02)]
    assert plain["segm_AP"] == pytest.approx(statistics.mean(fig6_ap("Mask R-CNN", 0.02, s) for s in (0, 1)))
    assert plain["segm_AP_n"] == 2 and plain["segm_AP_std"] == pytest.approx(statistics.stdev([0.0, 1.0]))
    assert points[("Mask R-CNN w/ ShapeProp", 0.01)]["segm_AP_n"] == 1
    assert [n for n in rep.notes if "no finished run" in n] == [
        f"'Mask R-CNN', data.data_fraction=0.005: no finished run (1 killed; newest: MLflow run {killed})"
    ]

    width, height = figures.FIG6_SIZE
    with Image.open(tmp_path / "figure6-mini.png") as image:
        assert image.size == (round(width * figures.DPI), round(height * figures.DPI))
    svg = ET.parse(tmp_path / "figure6-mini.svg").getroot()
    assert svg.get("width") == f"{width * 72:g}pt" and svg.get("height") == f"{height * 72:g}pt"
    assert [figures.fraction_label(f) for f in FRACTIONS] == ["1/10", "1/50", "1/100"]


def test_figure9_density_by_object_size(store, tmp_path):
    import pandas

    rep = figure_report(9, store.client, "mini", tmp_path, console=quiet())
    assert sorted(p.name for p in rep.files) == ["figure9-mini.csv", "figure9-mini.png", "figure9-mini.svg"]
    assert any("no best_overlap.csv" in note for note in rep.notes)

    table = pandas.read_csv(io.StringIO(best_overlap_csv()))
    small = table[table["area"] < 32**2]
    large = table[table["area"] >= 96**2]
    summary = {r["size"]: r for r in rep.data.to_dict("records")}
    assert summary["small"]["n"] == len(small) and summary["large"]["n"] == len(large)
    assert summary["small"]["saliency_iou"] == pytest.approx(small["saliency_iou"].mean())
    assert summary["large"]["shape_iou"] == pytest.approx(large["shape_iou"].mean())
    assert sum(r["n"] for r in summary.values()) == len(table)

    width, height = figures.FIG9_PANEL
    with Image.open(tmp_path / "figure9-mini.png") as image:
        assert image.size == (round(2 * width * figures.DPI), round(height * figures.DPI))
    assert (tmp_path / "figure9-mini.svg").stat().st_size > 10_000  # the density contours are drawn


# --------------------------------------------------------------------------- CLI


def test_cli_renders_and_logs_to_mlflow(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root for the reports experiment is relative
    monkeypatch.setenv("COLUMNS", "250")  # rich's width: keep table cells on one line
    out = tmp_path / "out"
    args = [
        "--table",
        "4",
        "--figure",
        "6",
        "--profile",
        "mini",
        "--tracking-uri",
        store.uri,
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(report, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "21.3 ± 1.5 (21.6, Δ -0.3)" in result.output
    assert f"mlflow ui --backend-store-uri {store.uri}" in result.output
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(
        [f"table4-mini.{x}" for x in ("csv", "html", "md", "tex")]
        + [f"figure6-mini.{x}" for x in ("csv", "png", "svg")]
    )

    client = MlflowClient(tracking_uri=store.uri)
    experiment = client.get_experiment_by_name("shapeprop-bench/reports")
    logged = {}
    for run in client.search_runs([experiment.experiment_id], "tags.kind = 'report'"):
        assert run.info.status == "FINISHED" and run.data.tags["profile"] == "mini"
        logged[run.data.tags["report"]] = sorted(a.path for a in client.list_artifacts(run.info.run_id))
    assert logged["table4"] == [f"table4-mini.{x}" for x in ("csv", "html", "md", "tex")]
    assert logged["figure6"] == [f"figure6-mini.{x}" for x in ("csv", "png", "svg")]


def test_cli_errors(tmp_path):
    result = CliRunner().invoke(report, ["--tracking-uri", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code == 2 and "--table N or --figure" in result.output
    missing = tmp_path / "none.db"
    result = CliRunner().invoke(report, ["--table", "1", "--tracking-uri", f"sqlite:///{missing}"])
    assert result.exit_code == 1 and "no MLflow store" in result.output
    assert not missing.exists()  # reading never creates a store
    result = CliRunner().invoke(report, ["--table", "5"])
    assert result.exit_code == 2


def test_reference_file_errors_name_file_and_line(tmp_path):
    (tmp_path / "table4.csv").write_text(
        "table,section,row,column_group,column,value\ntable4,,baseline,,AP,21.6\n"
    )
    assert load_reference("table4", tmp_path)[0].value == 21.6
    (tmp_path / "table4.csv").write_text("table,row,value\n")
    with pytest.raises(ValueError, match=r"table4.csv:1: header"):
        load_reference("table4", tmp_path)
    (tmp_path / "table4.csv").write_text(
        "table,section,row,column_group,column,value\ntable4,,baseline,,AP,n/a\n"
    )
    with pytest.raises(ValueError, match=r"table4.csv:2: value 'n/a' is not a number"):
        load_reference("table4", tmp_path)
    with pytest.raises(FileNotFoundError, match="table3"):
        load_reference("table3", tmp_path)


def test_piped_report_prints_the_markdown_table_uncut(store, tmp_path, monkeypatch):
    """Not a terminal (a file, a pager, a pipe): the Markdown table, every cell whole, at any width."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / "out"
    args = ["--table", "2", "--profile", "mini", "--tracking-uri", store.uri, "--out", str(out), "--no-log"]
    result = CliRunner().invoke(report, args, terminal_width=80)
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    written = (out / "table2-mini.md").read_text()
    table_lines = [line for line in written.splitlines() if line.startswith("|")]
    assert len(table_lines) > 3 and max(map(len, table_lines)) > 80  # wider than the terminal ...
    for line in table_lines:  # ... and printed whole
        assert line in result.output.splitlines()


VERSIONED_SUITE = """\
name: versioned
reproduces: table4
base:
  data: {dataset: synthetic}
  model: {backbone: tiny}
rows:
  - {label: "baseline", method: mask_rcnn}
  - {label: "baseline + ShapeProp", method: shapeprop}
axes:
  seed: [0, 1]
profiles:
  mini:
    overrides: {schedule.max_steps: 2}
"""


def suite_keys(path: Path, seeds: int = 2) -> dict[tuple[str, int], str]:
    """{(row, seed): run key} of the suite file at `path` as it reads now, `seeds` seeds."""
    suite = with_seeds(load_suite(path), "mini", seeds)
    return {(spec.row, spec.seed): spec.key for spec in expand(suite, "mini")}


def test_runs_of_an_earlier_version_of_the_suite_file_are_left_out_not_mixed_into_a_cell(tmp_path):
    """A suite file edited after some runs (a new schedule, a new benchmark version): the report shows
    the runs of the file as it reads now, never the older ones beside them in one cell, nor alone as
    if current; seeds added by `run --until-decided` count. Until a run of the new config exists,
    the older ones are shown, with a note."""
    path = tmp_path / "versioned.yaml"
    path.write_text(VERSIONED_SUITE)
    older = suite_keys(path)
    path.write_text(VERSIONED_SUITE.replace("max_steps: 2", "max_steps: 3"))
    now = suite_keys(path, seeds=3)
    assert not set(older.values()) & set(now.values())

    (tmp_path / "store").mkdir()
    store = Store(tmp_path / "store")

    def log(row: str, ap: float, seed: int, key: str) -> None:
        store.log_run("versioned", "table4", row, {"segm_AP": ap}, seed=seed, key=key)

    for seed in (0, 1):
        log("baseline", 50.0, seed, older["baseline", seed])
        log("baseline + ShapeProp", 60.0, seed, older["baseline + ShapeProp", seed])
    for seed, ap in ((0, 20.0), (1, 22.0), (2, 24.0)):  # seed 2: a seed `run --until-decided` added
        log("baseline", ap, seed, now["baseline", seed])
    log("baseline", 90.0, 1, older["baseline", 1])  # the newest run of its cell and seed, but older config

    rep = table_report(4, store.client, "mini", tmp_path / "out", str(path), console=quiet())
    got = cells(rep.data)
    assert (got["baseline", "AP"]["mean"], got["baseline", "AP"]["n"]) == (22.0, 3)
    assert got["baseline + ShapeProp", "AP"]["n"] == 0  # not run again yet: missing, not the old 60
    assert (
        "5 finished run(s) of versioned with a config its suite file no longer gives (an earlier version "
        "of the suite or the benchmark) were left out"
    ) in rep.notes

    # Nothing run since the file changed: the older runs are what there is, shown, and said so.
    (tmp_path / "before").mkdir()
    before = Store(tmp_path / "before")
    for seed in (0, 1):
        before.log_run(
            "versioned", "table4", "baseline", {"segm_AP": 50.0}, seed=seed, key=older["baseline", seed]
        )
    rep = table_report(4, before.client, "mini", tmp_path / "out", str(path), console=quiet())
    assert (cells(rep.data)["baseline", "AP"]["mean"], cells(rep.data)["baseline", "AP"]["n"]) == (50.0, 2)
    assert any(note.startswith("none of the 2 finished runs of versioned has a config") for note in rep.notes)


def test_set_picks_runs_by_a_key_inside_a_free_dict(store, tmp_path):
    """`report --set data.options.version=2`: `data.options` is one JSON param, not a param per key."""
    from harness.report.runs import fetch_runs

    for version, ap in ((1, 30.0), (2, 20.0)):
        params = {"data.options": json.dumps({"num_images": 8, "version": version}, sort_keys=True)}
        store.log_run("ablations", "table4", "baseline", {"segm_AP": ap}, params=params)
    store.log_run("ablations", "table4", "baseline", {"segm_AP": 10.0}, params={"data.options": "{}"})
    picked = {
        version: sorted(
            fetch_runs(store.client, "table4", overrides={"data.options.version": version})["segm_AP"]
        )
        for version in (1, 2, 3)
    }
    assert picked == {1: [30.0], 2: [20.0], 3: []}
    assert len(fetch_runs(store.client, "table4", overrides={"data.options.num_images": 8})) == 2
    assert len(fetch_runs(store.client, "table4", overrides={"data.nothing.version": 1})) == 0
