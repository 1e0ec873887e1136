"""`report --claims`: the paper's claims, declared in the suite files, tested on paired runs.

The statistics are checked against values computed here by hand (closed forms of Student's t with
1 and 2 degrees of freedom, binomial sums), not with the module's helpers; the CLI runs on a real
SQLite MLflow store whose FINISHED runs carry chosen metrics and best-overlap tables.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import pandas
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from test_report import Store  # tests/ is on sys.path (pytest's rootdir-less test modules)

from harness.cli.report import report
from harness.report.claims import claim_suites, paired_stats, to_markdown, verdict
from harness.report.layouts import TABLES, normalize
from harness.report.reference import load_reference
from harness.suite import SuiteError, load_suite


def t_975(df: int) -> float:
    """Student t's 0.975 quantile in closed form: Cauchy for df 1, F(t) = 1/2 + t / (2 sqrt(2 + t^2)) for df 2."""
    if df == 1:
        return math.tan(math.pi * (0.975 - 0.5))
    s = 2 * 0.975 - 1  # t / sqrt(2 + t^2) = s
    return math.sqrt(2 * s * s / (1 - s * s))


def test_t_quantiles_by_hand_match_the_tables():
    assert t_975(1) == pytest.approx(12.706, abs=1e-3) and t_975(2) == pytest.approx(4.303, abs=1e-3)


def test_paired_statistics_by_hand():
    got = paired_stats([1.0, 2.0, 3.0])
    half = t_975(2) * 1.0 / math.sqrt(3)  # = 2.484
    assert (got.n, got.mean, got.std) == (3, pytest.approx(2.0), pytest.approx(1.0))
    assert (got.ci_low, got.ci_high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert half == pytest.approx(2.484, abs=1e-3)
    assert got.sign_p == pytest.approx(2 * 0.5**3)  # 3 of 3 positive, two-sided: 0.25
    assert verdict(got, "higher") == "cannot decide"  # the interval [-0.48, 4.48] holds 0

    # Zeros leave the sign test: 5 of 5 non-zero differences positive, p = 2 / 2^5.
    assert paired_stats([0.0, 1, 1, 1, 1, 1]).sign_p == pytest.approx(2 / 32)
    # 3 of 4 positive: p = 2 P(X >= 3) = 2 (4 + 1) / 16.
    assert paired_stats([1.0, -1, 2, 3]).sign_p == pytest.approx(10 / 16)

    up = paired_stats([2.0, 2.5, 3.0])  # mean 2.5, sd 0.5: [1.26, 3.74]
    assert up.ci_low == pytest.approx(2.5 - t_975(2) * 0.5 / math.sqrt(3))
    assert verdict(up, "higher") == "supports" and verdict(up, "lower") == "contradicts"
    down = paired_stats([-2.0, -2.5, -3.0])
    assert verdict(down, "lower") == "supports" and verdict(down, "higher") == "contradicts"

    one = paired_stats([5.0])
    assert one.n == 1 and one.mean == 5.0 and math.isnan(one.ci_low) and math.isnan(one.std)
    assert verdict(one, "higher") == "cannot decide"
    none = paired_stats([])
    assert none.n == 0 and math.isnan(none.mean) and math.isnan(none.sign_p)
    assert verdict(none, "higher") == "missing"
    assert paired_stats([1.0, math.nan, 3.0]).n == 2  # a missing value is no pair


# --------------------------------------------------------------------------- a suite and its runs

SUITE = """\
name: claimsdemo
reproduces: table4
base:
  data: {dataset: synthetic}
  model: {backbone: tiny}
rows:
  - {label: "baseline", method: mask_rcnn}
  - {label: "baseline + ShapeProp", method: shapeprop}
  - {label: "never run", method: mask_rcnn, overrides: {schedule.lr: 0.03}}
  - {label: "Mask R-CNN", method: mask_rcnn, overrides: {schedule.lr: 0.05}}
  - {label: "Mask R-CNN w/ ShapeProp", method: shapeprop, overrides: {schedule.lr: 0.05}}
axes:
  seed: [0, 1, 2]
profiles:
  mini:
    overrides: {schedule.max_steps: 2}
claims:
  - {claim: "plain", ours: "baseline + ShapeProp", baseline: "baseline", paper: +1.1, direction: higher}
  - {claim: "nothing to compare", ours: "never run", baseline: "baseline", direction: higher}
  - claim: "per fraction"
    ours: "Mask R-CNN w/ ShapeProp"
    baseline: "Mask R-CNN"
    by: data.data_fraction
    direction: higher
  - claim: "shape vs saliency"
    ours: "baseline + ShapeProp"
    baseline: "baseline + ShapeProp"
    metric: {ours: "best_overlap.csv:shape_iou", baseline: "best_overlap.csv:saliency_iou"}
    direction: higher
"""

BASE = {"segm_AP": [20.0, 21.0, 23.0], "gtbox_mask_iou": [50.0, 52.0, 51.0], "bbox_AP": [30.0, 31.0, 32.0]}
DIFF = {"segm_AP": [2.0, 2.5, 3.0], "gtbox_mask_iou": [1.0, 2.0, 3.0], "bbox_AP": [-2.0, -2.5, -3.0]}
# Best overlaps per object, (shape, saliency): ShapeProp's seeds 0 and 1 (seed 2 logs no table).
OVERLAPS = {0: [(0.8, 0.5), (0.6, 0.5)], 1: [(0.9, 0.6), (0.7, 0.4)]}


def overlap_table(path: Path, objects: list[tuple[float, float]]) -> Path:
    lines = ["image_id,gt_id,area,saliency_iou,shape_iou"]
    lines += [f"0,{i},100.0,{saliency},{shape}" for i, (shape, saliency) in enumerate(objects)]
    path.mkdir()
    (path / "best_overlap.csv").write_text("\n".join(lines) + "\n")
    return path / "best_overlap.csv"


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path)
    run = lambda row, metrics, **kw: s.log_run("claimsdemo", "table4", row, metrics, **kw)  # noqa: E731
    for seed in range(3):
        run("baseline", {m: v[seed] for m, v in BASE.items()}, seed=seed)
        artifacts = None
        if seed in OVERLAPS:
            table = overlap_table(tmp_path / f"overlap{seed}", OVERLAPS[seed])
            artifacts = {"best_overlap.csv": table}
        ours = {m: BASE[m][seed] + DIFF[m][seed] for m in BASE}
        run("baseline + ShapeProp", ours, seed=seed, key=f"sp{seed}", artifacts=artifacts)
    # Not counted: a seed the baseline lacks (no pair), another profile, a failed run.
    run("baseline + ShapeProp", {"segm_AP": 40.0}, seed=3)
    run("baseline", {"segm_AP": 0.0}, seed=0, profile="full")
    run("baseline + ShapeProp", {"segm_AP": 99.0}, seed=0, key="sp0", status="FAILED")
    # Fig. 6-like: one comparison per data fraction; 1/100 has one seed only.
    for fraction, seeds in (("0.1", [0, 1, 2]), ("0.01", [0])):
        for seed in seeds:
            params = {"data.data_fraction": fraction}
            run("Mask R-CNN", {"segm_AP": 10.0 + seed}, seed=seed, params=params)
            run("Mask R-CNN w/ ShapeProp", {"segm_AP": 11.0 + seed}, seed=seed, params=params)
    return s


def claims_cli(store: Store, suite: Path, out: Path, *extra: str):
    args = ["--claims", "--profile", "mini", "--suite", str(suite), "--tracking-uri", store.uri]
    return CliRunner().invoke(report, [*args, "--out", str(out), *extra], terminal_width=250)


def ci(values: list[float], df_t: float) -> str:
    m, half = statistics.mean(values), df_t * statistics.stdev(values) / math.sqrt(len(values))
    return f"[{m - half:+.2f}, {m + half:+.2f}]"


def test_claims_on_a_real_store_through_the_cli(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the reports experiment's default artifact root is relative
    suite = tmp_path / "claimsdemo.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    result = claims_cli(store, suite, out)
    assert result.exit_code == 0, result.output
    assert f"{out / 'claims.md'}" in result.output and f"{out / 'claims.csv'}" in result.output
    md = (out / "claims.md").read_text()

    ours_ap = [b + d for b, d in zip(BASE["segm_AP"], DIFF["segm_AP"], strict=True)] + [40.0]
    assert "| **plain**<br>baseline + ShapeProp vs baseline | mask AP | +1.1 | +2.50 ± 0.50 (n=3) | " in md
    assert (
        f"| mask AP | +1.1 | +2.50 ± 0.50 (n=3) | {ci(DIFF['segm_AP'], t_975(2))} | p=0.25 (3/3 > 0) | supports "
        f"| {statistics.mean(ours_ap):.1f} ± {statistics.stdev(ours_ap):.2f} (n=4) | 21.3 ± 1.53 (n=3) |"
    ) in md
    assert (
        f"| IoU@GT |  | +2.00 ± 1.00 (n=3) | {ci(DIFF['gtbox_mask_iou'], t_975(2))} | p=0.25 (3/3 > 0) "
        "| cannot decide |"
    ) in md
    assert (
        f"| box AP |  | -2.50 ± 0.50 (n=3) | {ci(DIFF['bbox_AP'], t_975(2))} | p=0.25 (0/3 > 0) | contradicts |"
    ) in md
    assert (
        "| **nothing to compare**<br>never run vs baseline | mask AP |  | missing |  |  | missing | missing |"
        in md
    )
    # One comparison per fraction: 1/10 has three equal differences (interval [1, 1]), 1/100 one.
    assert "| **per fraction [data.data_fraction=0.01]**<br>Mask R-CNN w/ ShapeProp vs Mask R-CNN |" in md
    assert "| +1.00 (n=1) |  | p=1 (1/1 > 0) | cannot decide |" in md
    assert (
        "| **per fraction [data.data_fraction=0.1]** | mask AP |  | +1.00 ± 0.00 (n=3) | [+1.00, +1.00] |"
        in md
    )
    # Two metrics of the same runs, read from their best_overlap.csv artifacts (x 100).
    gains = [100 * statistics.mean(s - g for s, g in objects) for objects in OVERLAPS.values()]
    assert gains == pytest.approx([20.0, 30.0])
    assert (
        f"| best_overlap.csv:shape_iou vs best_overlap.csv:saliency_iou |  | +25.00 ± 7.07 (n=2) "
        f"| {ci(gains, t_975(1))} | p=0.5 (2/2 > 0) | cannot decide |"
    ) in md
    assert "('baseline + ShapeProp', seed 2) has no best_overlap.csv artifact" in md

    with (out / "claims.csv").open() as handle:
        lines = {(r["claim"], r["by"], r["metric"]): r for r in csv.DictReader(handle)}
    plain = lines[("plain", "", "mask AP")]
    assert int(plain["n"]) == 3 and float(plain["mean"]) == pytest.approx(2.5)
    assert float(plain["ci_low"]) == pytest.approx(2.5 - t_975(2) * 0.5 / math.sqrt(3), abs=1e-4)
    assert float(plain["sign_p"]) == pytest.approx(0.25) and plain["verdict"] == "supports"
    assert plain["paper"] == "1.1000" and plain["profile"] == "mini" and plain["ours_n"] == "4"
    assert lines[("nothing to compare", "", "box AP")]["verdict"] == "missing"

    client = MlflowClient(tracking_uri=store.uri)
    experiment = client.get_experiment_by_name("shapeprop-bench/reports")
    (logged,) = client.search_runs([experiment.experiment_id], "tags.report = 'claims'")
    assert logged.data.tags["profile"] == "mini"
    assert sorted(a.path for a in client.list_artifacts(logged.info.run_id)) == ["claims.csv", "claims.md"]


def test_claims_without_runs_read_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store(tmp_path)
    store.experiment("other")  # a store, but no run of this suite
    (tmp_path / "s.yaml").write_text(SUITE)
    result = claims_cli(store, tmp_path / "s.yaml", tmp_path / "out", "--no-log")
    assert result.exit_code == 0, result.output
    md = (tmp_path / "out" / "claims.md").read_text()
    assert "## claimsdemo\n\nAll 4 claims are missing: no finished run of their rows.\n" in md
    with (tmp_path / "out" / "claims.csv").open() as handle:
        lines = list(csv.DictReader(handle))
    # every claim and metric: three each, one for the claim of two best-overlap columns
    assert len(lines) == 3 + 3 + 3 + 1 and {line["verdict"] for line in lines} == {"missing"}


def test_a_suite_of_one_claim_not_run_reads_in_the_singular():
    data = pandas.DataFrame({"suite": ["figure9"], "claim": ["Fig. 9"], "ours_n": [0], "baseline_n": [0]})
    md = to_markdown(data, "Claims", [])
    assert "## figure9\n\nThe claim is missing: no finished run of its rows.\n" in md


def test_a_claim_naming_an_unknown_row_fails_to_load(tmp_path):
    text = SUITE.replace('baseline: "Mask R-CNN"\n', 'baseline: "Mask RCNN"\n')
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    line = text.splitlines().index('    baseline: "Mask RCNN"') + 1
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    message = str(err.value)
    assert f"{path}:{line}: claims[2].baseline: no row 'Mask RCNN' in this suite" in message
    assert "(did you mean 'Mask R-CNN'?)" in message
    assert (
        "rows: 'baseline', 'baseline + ShapeProp', 'never run', 'Mask R-CNN', 'Mask R-CNN w/ ShapeProp'"
        in message
    )
    store = Store(tmp_path)
    store.experiment("claimsdemo")
    result = CliRunner().invoke(report, ["--claims", "--suite", str(path), "--tracking-uri", store.uri])
    assert result.exit_code == 1 and f"{path}:{line}: claims[2].baseline" in result.output


@pytest.mark.parametrize(
    "change, problem",
    [
        (("paper: +1.1, direction: higher", "paper: +1.1, direction: lower"), "claims[0].paper: the paper's difference +1.1 contradicts direction 'lower'"),
        (("by: data.data_fraction", "by: data.fraction"), "claims[2].by: unknown config key 'data.fraction'"),
        (('metric: {ours: "best_overlap.csv:shape_iou", ', "metric: {ours: best_overlap.csv:saliency_iou, "), "claims[3].baseline: compares a row with itself"),
    ],
)  # fmt: skip
def test_other_claim_problems_name_the_key(change, problem):
    assert change[0] in SUITE
    with pytest.raises(SuiteError, match=rf"s\.yaml:\d+: {__import__('re').escape(problem)}"):
        from harness.suite import parse_suite

        parse_suite(SUITE.replace(*change), "s.yaml")


def cell_key(cell: dict) -> tuple[str, str, str]:
    return normalize(cell["section"]), normalize(cell["row"]), normalize(cell["column_group"])


def test_the_suites_claims_carry_the_papers_differences():
    """Every `paper` of a Table 1-4 claim is the paper's mask AP of `ours` minus that of `baseline`
    (reports/reference), and every paper suite declares claims."""
    suites = claim_suites()
    assert {s.name for s in suites} == {
        "table1", "table1_r101", "table2", "table3", "ablations", "fractions", "best_overlap"
    }  # fmt: skip
    checked = 0
    for suite in suites:
        if suite.reproduces not in TABLES:
            continue
        layout = TABLES[suite.reproduces]
        ap = {
            cell_key({"section": c.section, "row": c.row, "column_group": c.column_group}): c.value
            for c in load_reference(suite.reproduces)
            if c.column == "AP"
        }
        for claim in suite.claims:
            if claim.metric is not None:  # Fig. 9 within a Table 4 row: no table cell
                continue
            ours, base = (layout.place(label) for label in (claim.ours, claim.baseline))
            difference = ap[cell_key(ours)] - ap[cell_key(base)]
            if math.isnan(difference):  # the R-50 oracle: no number in the paper's table
                assert claim.paper is None, claim.claim
                continue
            assert claim.paper == pytest.approx(difference, abs=1e-9), claim.claim
            checked += 1
    assert checked == 33
