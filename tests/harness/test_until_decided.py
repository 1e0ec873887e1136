"""`run --until-decided` through the CLI on a real SQLite store: seeds are added in rounds to the
rows of the claims still undecided, a decided claim stops at its look, the design is kept on the
suite's experiment for `report --claims`, and a design once looked at cannot change.

The experiment is a stand-in (no training) whose mask AP is a known function of row and seed.
"""

from __future__ import annotations

import csv

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

import shapeprop.experiment
from harness.cli.report import report
from harness.cli.run import run
from harness.until_decided import exact, read_design
from shapeprop.experiment import ExperimentResult

SUITE = """\
name: seqdemo
reproduces: table4
base:
  data: {dataset: synthetic, options: {num_images: 4, image_size: 64}, min_size: 64, max_size: 64}
  model: {backbone: tiny}
  schedule: {max_steps: 1}
rows:
  - {label: "baseline", method: mask_rcnn}
  - {label: "big gain", method: mask_rcnn, overrides: {schedule.lr: 0.03}}
  - {label: "small gain", method: mask_rcnn, overrides: {schedule.lr: 0.04}}
  - {label: "unclaimed", method: mask_rcnn, overrides: {schedule.lr: 0.05}}
profiles:
  mini: {seeds: [0, 1, 2]}
claims:
  - {claim: "big", ours: "big gain", baseline: "baseline", paper: +5.0, direction: higher}
  - {claim: "small", ours: "small gain", baseline: "baseline", paper: +0.3, direction: higher}
"""
GAIN = {"baseline": 0.0, "big gain": 5.0, "small gain": 0.3, "unclaimed": 0.0}
NOISE = [0.3, -0.2, 0.1, -0.4, 0.25, 0.05, -0.1, 0.2]  # by seed and row


def stand_in(cfg, workdir, callbacks, progress, **_):
    row = {0.02: "baseline", 0.03: "big gain", 0.04: "small gain", 0.05: "unclaimed"}[cfg.schedule.lr]
    offset = list(GAIN).index(row)
    ap = 20.0 + GAIN[row] + NOISE[(cfg.seed + 3 * offset) % len(NOISE)]
    metrics = {"segm_AP": ap, "bbox_AP": ap + 1, "gtbox_mask_iou": 50.0 + GAIN[row]}
    return ExperimentResult(metrics, {}, {}, "a" * 64, {"total": 1}, "b" * 64)


@pytest.fixture
def suite(tmp_path, monkeypatch):
    monkeypatch.setattr(shapeprop.experiment, "run_experiment", stand_in)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "seqdemo.yaml"
    path.write_text(
        SUITE.replace(
            '{label: "baseline", method: mask_rcnn}',
            '{label: "baseline", method: mask_rcnn, overrides: {schedule.lr: 0.02}}',
        )
    )
    return path


def invoke(command, *args):
    return CliRunner().invoke(command, [str(a) for a in args], terminal_width=200)


def seeds_by_row(uri: str) -> dict[str, list[int]]:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("shapeprop-bench/seqdemo")
    found: dict[str, list[int]] = {}
    for r in client.search_runs(
        [experiment.experiment_id], "tags.kind = 'run' and attributes.status = 'FINISHED'"
    ):
        found.setdefault(r.data.tags["row"], []).append(int(r.data.tags["seed"]))
    return {row: sorted(seeds) for row, seeds in found.items()}


def test_run_until_decided_adds_seeds_to_the_undecided_claims_only(suite, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ("--profile", "mini", "--tracking-uri", uri, "--runs-dir", tmp_path / "runs", "--no-preflight")
    result = invoke(run, suite, *common, "--until-decided", "--max-seeds", 6, "--seeds-per-round", 1)
    assert result.exit_code == 0, result.output
    assert "until decided: looks at 3, 4, 5, 6 seeds" in result.output
    assert "decided at 3 seeds: big: the paper's direction" in result.output
    seeds = seeds_by_row(uri)
    assert seeds["big gain"] == [0, 1, 2]  # decided at the first look: no seed more
    assert seeds["small gain"] == seeds["baseline"] == list(range(6))  # undecided to the cap
    assert seeds["unclaimed"] == [0, 1, 2]  # in no claim
    design = read_design(MlflowClient(tracking_uri=uri), "seqdemo", "mini")
    assert (design.first, design.step, design.max_seeds, design.stopped) == (3, 1, 6, {"big|": 3})

    out = tmp_path / "out"
    result = invoke(
        report,
        "--claims",
        "--suite",
        suite,
        "--profile",
        "mini",
        "--tracking-uri",
        uri,
        "--out",
        out,
        "--no-log",
    )
    assert result.exit_code == 0, result.output
    with (out / "claims.csv").open() as handle:
        lines = {(r["claim"], r["metric"]): r for r in csv.DictReader(handle)}
    big, small = lines["big", "mask AP"], lines["small", "mask AP"]
    assert int(big["n"]) == 3 and int(small["n"]) == 6  # judged at the look that stopped it
    assert big["adjustment"] == "Bonferroni over 2, sequential"
    assert float(big["level"]) == pytest.approx(design.level(3), abs=1e-4)
    assert float(small["level"]) == pytest.approx(design.level(6), abs=1e-4)

    # The design cannot change once looked at; the same one finds nothing more to do.
    changed = invoke(run, suite, *common, "--until-decided", "--max-seeds", 8, "--seeds-per-round", 1)
    assert changed.exit_code != 0 and "a sequential design cannot change once looked at" in changed.output
    again = invoke(run, suite, *common, "--until-decided", "--max-seeds", 6, "--seeds-per-round", 1)
    assert again.exit_code == 0, again.output
    assert seeds_by_row(uri) == seeds


def test_until_decided_refuses_a_suite_without_claims_or_too_few_seeds(suite, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ("--profile", "mini", "--tracking-uri", uri, "--no-preflight")
    few = invoke(run, suite, *common, "--until-decided", "--max-seeds", 3)
    assert few.exit_code != 0 and "already runs 3 seeds" in few.output
    bare = tmp_path / "bare.yaml"
    bare.write_text(suite.read_text().split("claims:")[0])
    none = invoke(run, bare, *common, "--until-decided")
    assert none.exit_code != 0 and "declares no claims" in none.output


@pytest.mark.parametrize("label", ["baseline", "a [b] * c?", "R-50 | x -> y | Mask R-CNN (Ours)"])
def test_exact_patterns_match_one_label(label):
    from harness.plan import select

    class Spec:
        def __init__(self, row):
            self.row, self.method, self.key = row, "m", "k"

    labels = [label, label + " + ShapeProp", "x" + label]
    assert [s.row for s in select([Spec(r) for r in labels], [exact(label)])] == [label]
