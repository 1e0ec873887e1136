"""Run archives: a real MLflow store's finished runs exported to JSON Lines, imported into a fresh
store, and the reports rendered from both must agree; `run`'s plan skips what was imported."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

import harness.archive
from harness import tracking
from harness.archive import ARCHIVED_FROM_TAG, ArchiveError, import_runs, read_archive
from harness.cli import main
from harness.report.build import figure_report, table_report
from tests.helpers.report_store import Store, fill, quiet


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The report tests' store (finished, failed, running and killed runs, two profiles, a
    best-overlap table), exported by the CLI and imported into an empty store by the CLI."""
    root = tmp_path_factory.mktemp("archive")
    source = fill(Store(root / "source"))
    archive = root / "runs.jsonl"
    cli = CliRunner()
    exported = cli.invoke(main, ["archive", "export", "--out", str(archive), "--tracking-uri", source.uri])
    assert exported.exit_code == 0, exported.output
    target_uri = f"sqlite:///{root / 'target.db'}"
    imported = cli.invoke(main, ["archive", "import", str(archive), "--tracking-uri", target_uri])
    assert imported.exit_code == 0, imported.output
    yield source, archive, target_uri, exported.output, imported.output
    shutil.rmtree(root, ignore_errors=True)


def finished_keys(uri: str, suite: str) -> set[str]:
    return {k for k, s in tracking.key_states(uri, suite).items() if s.state == "finished"}


def test_archive_holds_the_newest_finished_run_per_key(stores):
    source, archive, _, exported, _ = stores
    records = read_archive(archive)
    keys = [(r["suite"], r["run_key"]) for r in records]
    assert len(keys) == len(set(keys)) == sum(len(finished_keys(source.uri, s)) for s in {k[0] for k in keys})
    assert f"{len(records)} run(s)" in exported
    assert all(r["tags"]["kind"] == "run" for r in records)
    assert not any(tracking.PARENT_TAG in r["tags"] for r in records)
    # The re-run of key "mb" is archived, not the older run of that key.
    (mb,) = [r for r in records if r["run_key"] == "mb"]
    assert mb["metrics"]["segm_AP"] == 24.0
    with_table = [r for r in records if r["tables"]]
    assert [list(r["tables"]) for r in with_table] == [["best_overlap.csv"]]


@pytest.mark.parametrize("number", [1, 2, 4])
def test_tables_render_the_same_from_the_imported_store(stores, tmp_path, number):
    source, _, target_uri, _, _ = stores
    for profile in ("mini", "full"):
        before = table_report(number, source.client, profile, tmp_path / "a", console=quiet()).data
        after = table_report(
            number, tracking.client(target_uri), profile, tmp_path / "b", console=quiet()
        ).data
        assert before.equals(after)
        assert before["n"].sum() > 0 or profile == "full"


@pytest.mark.parametrize("number", [6, 9])
def test_figures_render_the_same_from_the_imported_store(stores, tmp_path, number):
    source, _, target_uri, _, _ = stores
    before = figure_report(number, source.client, "mini", tmp_path / "a", console=quiet()).data
    after = figure_report(number, tracking.client(target_uri), "mini", tmp_path / "b", console=quiet()).data
    assert len(before) and before.equals(after)


def test_imported_runs_are_finished_for_run_and_marked(stores):
    source, archive, target_uri, _, imported = stores
    for suite in ("ablations", "table1", "fractions", "best_overlap"):
        assert finished_keys(target_uri, suite) == finished_keys(source.uri, suite)
    client = tracking.client(target_uri)
    runs = list(
        tracking.search_runs(
            client, [e.experiment_id for e in client.search_experiments()], "tags.kind = 'run'"
        )
    )
    assert runs and all(r.data.tags[ARCHIVED_FROM_TAG] == str(archive) for r in runs)
    assert all(r.info.status == "FINISHED" for r in runs)
    parents = {r.data.tags[tracking.PARENT_TAG] for r in runs}
    assert all(client.get_run(p).data.tags["kind"] == "invocation" for p in parents)
    assert all(client.get_run(p).info.status == "FINISHED" for p in parents)
    assert f"{len(runs)} run(s) imported, 0 already finished" in imported
    # Importing again adds nothing.
    again = import_runs(target_uri, archive)
    assert (again.added, again.skipped) == (0, len(runs))


def test_export_keeps_the_files_runs_that_the_store_lacks(stores, tmp_path):
    source, archive, _, _, _ = stores
    merged = tmp_path / "runs.jsonl"
    shutil.copy(archive, merged)
    fresh = Store(tmp_path / "fresh")
    fresh.log_run("ablations", "table4", "baseline", {"segm_AP": 1.0}, key="new-key")
    CliRunner().invoke(main, ["archive", "export", "--out", str(merged), "--tracking-uri", fresh.uri])
    keys = {r["run_key"] for r in read_archive(merged)}
    assert keys == {r["run_key"] for r in read_archive(archive)} | {"new-key"}


def test_export_downloads_only_the_runs_the_file_lacks(stores, tmp_path, monkeypatch):
    """Re-exporting the imported store into the archive it came from reads no run again and leaves
    the file as it was; a run re-run under a known key is read again and replaces its record."""
    _, archive, target_uri, _, _ = stores
    again = tmp_path / "runs.jsonl"
    shutil.copy(archive, again)
    read = []
    real = harness.archive.run_record
    monkeypatch.setattr(
        harness.archive, "run_record", lambda client, run: read.append(run) or real(client, run)
    )
    harness.archive.export_runs(target_uri, again)
    assert read == [] and again.read_text() == archive.read_text()

    store = Store(tmp_path / "store")
    store.log_run("ablations", "table4", "baseline", {"segm_AP": 1.0}, key="k")
    harness.archive.export_runs(store.uri, again)
    store.log_run("ablations", "table4", "baseline", {"segm_AP": 2.0}, key="k")  # re-run, same key
    harness.archive.export_runs(store.uri, again)
    assert len(read) == 2
    (record,) = [r for r in read_archive(again) if r["run_key"] == "k"]
    assert record["metrics"]["segm_AP"] == 2.0


def test_export_selects_a_profile_whose_name_needs_quoting(tmp_path):
    store = Store(tmp_path / "store")
    store.log_run("ablations", "table4", "baseline", {"segm_AP": 1.0}, profile='it\'s "mini"')
    store.log_run("ablations", "table4", "baseline", {"segm_AP": 2.0}, profile="mini")
    out = tmp_path / "runs.jsonl"
    harness.archive.export_runs(store.uri, out, profile='it\'s "mini"')
    assert [r["metrics"]["segm_AP"] for r in read_archive(out)] == [1.0]


def test_a_bad_archive_names_file_and_line_and_imports_nothing(tmp_path):
    bad = tmp_path / "runs.jsonl"
    good = {"suite": "s", "run_key": "k", "run_id": "r", "tags": {}, "params": {}, "metrics": {}}
    bad.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(ArchiveError, match=r"runs.jsonl, line 2: not JSON"):
        read_archive(bad)
    bad.write_text(json.dumps({"suite": "s"}) + "\n")
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    result = CliRunner().invoke(main, ["archive", "import", str(bad), "--tracking-uri", uri])
    assert result.exit_code != 0
    assert (
        "line 1: a run record lacks run_key, run_id, tags, params, metrics; nothing was imported"
        in result.output
    )
    assert not tracking.key_states(uri, "s")
