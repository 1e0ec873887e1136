"""`report --claims`: the paper's claims, declared in the suite files, tested on paired runs.

The statistics are checked against scipy.stats' t test, statsmodels' TOST and Holm, computed here
from the known values (harness.report.inference has its own reference and simulation tests); the
CLI runs on a real SQLite MLflow store whose FINISHED runs carry chosen metrics and per-image tables
(best overlaps, IoU@GT per object, and COCO matches made by pycocotools).
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import numpy as np
import pandas
import pytest
import scipy.stats
from click.testing import CliRunner
from mlflow import MlflowClient
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from harness.cli.report import report
from harness.report.claims import UNDECIDED, claim_suites, family_summary, judge, to_markdown
from harness.report.inference import Sequential
from harness.report.layouts import TABLES, normalize
from harness.report.reference import load_reference
from harness.suite import SuiteError, expand, load_suite, with_seeds
from harness.until_decided import write_design
from tests.helpers.report_store import Store


def t_interval(values: list[float]) -> str:
    found = scipy.stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    return f"[{found.low:+.2f}, {found.high:+.2f}]"


def t_p(values: list[float]) -> float:
    return scipy.stats.ttest_1samp(values, 0.0).pvalue


def text_p(value: float) -> str:
    return f"{value:.2g}" if value >= 0.001 else f"{value:.0e}"


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
  - {label: "more params", method: mask_rcnn, overrides: {schedule.lr: 0.04}}
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
  - {claim: "params alone", ours: "more params", baseline: "baseline", paper: -0.2, direction: none, margin: 1.0}
"""

BASE = {"segm_AP": [20.0, 21.0, 23.0], "gtbox_mask_iou": [50.0, 52.0, 51.0], "bbox_AP": [30.0, 31.0, 32.0]}
DIFF = {"segm_AP": [2.0, 2.5, 3.0], "gtbox_mask_iou": [1.0, 2.0, 3.0], "bbox_AP": [-2.0, -2.5, -3.0]}
PARAMS_DIFF = [0.1, -0.1, 0.05]  # "more params" - "baseline", every metric: no difference
# Best overlaps per object, (shape, saliency): ShapeProp's seeds 0 and 1 (seed 2 logs no table).
OVERLAPS = {0: [(0.8, 0.5), (0.6, 0.5)], 1: [(0.9, 0.6), (0.7, 0.4)]}
IOU_OFFSETS = [0.20, -0.20, 0.10, -0.10, 0.05, -0.05, 0.15, -0.15]  # per object; they sum to 0


def overlap_table(path: Path, objects: list[tuple[float, float]]) -> Path:
    lines = ["image_id,gt_id,area,saliency_iou,shape_iou"]
    lines += [f"0,{i},100.0,{saliency},{shape}" for i, (shape, saliency) in enumerate(objects)]
    path.mkdir(exist_ok=True)
    (path / "best_overlap.csv").write_text("\n".join(lines) + "\n")
    return path / "best_overlap.csv"


def iou_table(path: Path, mean_iou: float, seed: int) -> Path:
    """gt_box_masks.csv: two objects on each of 4 images whose IoUs average `mean_iou` percent."""
    offsets = np.roll(IOU_OFFSETS, seed)
    lines = ["image_id,category_id,area,iou"]
    lines += [f"{i // 2},{i % 3},100,{mean_iou / 100 + float(o)!r}" for i, o in enumerate(offsets)]
    path.mkdir(exist_ok=True)
    (path / "gt_box_masks.csv").write_text("\n".join(lines) + "\n")
    return path / "gt_box_masks.csv"


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path)
    run = lambda row, metrics, **kw: s.log_run("claimsdemo", "table4", row, metrics, **kw)  # noqa: E731
    for seed in range(3):
        base = {m: v[seed] for m, v in BASE.items()}
        table = iou_table(tmp_path / f"base{seed}", base["gtbox_mask_iou"], seed)
        run("baseline", base, seed=seed, artifacts={"gt_box_masks.csv": table})
        ours = {m: BASE[m][seed] + DIFF[m][seed] for m in BASE}
        artifacts = {"gt_box_masks.csv": iou_table(tmp_path / f"sp{seed}", ours["gtbox_mask_iou"], seed + 3)}
        if seed in OVERLAPS:
            artifacts["best_overlap.csv"] = overlap_table(tmp_path / f"sp{seed}", OVERLAPS[seed])
        run("baseline + ShapeProp", ours, seed=seed, key=f"sp{seed}", artifacts=artifacts)
        run("more params", {m: BASE[m][seed] + PARAMS_DIFF[seed] for m in BASE}, seed=seed)
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


def read_csv_lines(path: Path) -> dict:
    with path.open() as handle:
        return {(r["claim"], r["by"], r["metric"]): r for r in csv.DictReader(handle)}


def test_claims_on_a_real_store_through_the_cli(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the reports experiment's default artifact root is relative
    suite = tmp_path / "claimsdemo.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    result = claims_cli(store, suite, out)
    assert result.exit_code == 0, result.output
    assert f"{out / 'claims.md'}" in result.output and f"{out / 'claims.csv'}" in result.output
    md = (out / "claims.md").read_text()
    assert "sign test" not in md

    # mask AP, one family: "plain", "per fraction [0.1]" and the equivalence of "params alone" are
    # tested (1/100 has one seed, "nothing to compare" no pair); Holm over the three.
    fraction_p = 0.0  # three equal differences: no variance
    plain_p = t_p(DIFF["segm_AP"])
    ours = np.array([b + d for b, d in zip(BASE["segm_AP"], PARAMS_DIFF, strict=True)])
    tost = ttost_paired(ours, np.array(BASE["segm_AP"]), -1.0, 1.0)[0]
    holm = multipletests([plain_p, fraction_p, tost], method="holm")[1]
    ours_ap = [b + d for b, d in zip(BASE["segm_AP"], DIFF["segm_AP"], strict=True)] + [40.0]
    assert (
        f"| **plain**<br>baseline + ShapeProp vs baseline | mask AP | +1.1 | **+2.50** (n=3: +2.00, +2.50, +3.00) "
        f"| {t_interval(DIFF['segm_AP'])} seeds | {text_p(plain_p)} ({text_p(holm[0])}) "
        "| the paper's direction, larger than the paper's "  # the paper's +1.1 lies below [+1.26, +3.74]
        f"| {statistics.mean(ours_ap):.1f} ± {statistics.stdev(ours_ap):.2f} (n=4) | 21.3 ± 1.53 (n=3) |"
    ) in md
    assert (
        "Families (adjusted together): mask AP: Holm over 3; IoU@GT: Holm over 2; box AP: Holm over 2;" in md
    )
    # box AP went down where the paper claims up
    assert f"| box AP |  | **-2.50** (n=3: -2.00, -2.50, -3.00) | {t_interval(DIFF['bbox_AP'])} seeds |" in md
    assert "| the other direction than the paper |" in md
    # IoU@GT: every run has its per-object table, so the interval holds the images too (wider than t's)
    lines = read_csv_lines(out / "claims.csv")
    iou = lines[("plain", "", "IoU@GT")]
    assert iou["sources"] == "seeds + images" and float(iou["image_se"]) > 0
    t_half = scipy.stats.t.isf(0.025, 2) * float(iou["seed_se"])
    half = math.hypot(t_half, scipy.stats.norm.isf(0.025) * float(iou["image_se"]))
    assert float(iou["ci_high"]) - float(iou["mean"]) == pytest.approx(half, abs=1e-3)
    assert "| **nothing to compare**<br>never run vs baseline | mask AP |  | missing |  |  | missing |" in md
    # One comparison per fraction: 1/10 has three equal differences (interval [1, 1]), 1/100 one.
    assert "| **per fraction [data.data_fraction=0.01]**<br>Mask R-CNN w/ ShapeProp vs Mask R-CNN |" in md
    assert "| +1.00 (n=1) |  |  | undecided |" in md
    assert (
        "| **per fraction [data.data_fraction=0.1]** | mask AP |  | **+1.00** (n=3: +1.00, +1.00, +1.00) "
        "| [+1.00, +1.00] seeds | 0e+00 (0e+00) | the paper's direction |"
    ) in md
    # Two metrics of the same runs, read from their best_overlap.csv artifacts (x 100), with images.
    gains = [100 * statistics.mean(s - g for s, g in objects) for objects in OVERLAPS.values()]
    shape = lines[("shape vs saliency", "", "best_overlap.csv:shape_iou vs best_overlap.csv:saliency_iou")]
    assert (
        float(shape["mean"]) == pytest.approx(statistics.mean(gains))
        and shape["differences"] == "0:+20.00 1:+30.00"
    )
    assert "('baseline + ShapeProp', seed 2) has no best_overlap.csv artifact" in md
    # A claim of no difference: two one-sided tests, as statsmodels' paired TOST
    params = lines[("params alone", "", "mask AP")]
    assert params["test"] == "equivalence" and float(params["p"]) == pytest.approx(tost, abs=1e-4)
    assert params["verdict"] == "no difference (within ±1), as the paper"
    assert "| **params alone**<br>more params vs baseline | mask AP | -0.2 (none, ±1) |" in md
    # An undecided line says how many seeds would decide it.
    assert lines[("plain", "", "box AP")]["verdict"] == "the other direction than the paper"

    plain = lines[("plain", "", "mask AP")]
    assert int(plain["n"]) == 3 and float(plain["mean"]) == pytest.approx(2.5)
    assert float(plain["p"]) == pytest.approx(plain_p, abs=1e-4)
    assert (
        float(plain["p_adjusted"]) == pytest.approx(holm[0], abs=1e-4)
        and plain["adjustment"] == "Holm over 3"
    )
    bh = multipletests([plain_p, fraction_p, tost], method="fdr_bh")[1]
    assert float(plain["q_bh"]) == pytest.approx(bh[0], abs=1e-4)
    assert plain["profile"] == "mini" and plain["ours_n"] == "4"
    assert lines[("nothing to compare", "", "box AP")]["verdict"] == "missing"

    client = MlflowClient(tracking_uri=store.uri)
    experiment = client.get_experiment_by_name("shapeprop-bench/reports")
    (logged,) = client.search_runs([experiment.experiment_id], "tags.report = 'claims'")
    assert logged.data.tags["profile"] == "mini"
    assert sorted(a.path for a in client.list_artifacts(logged.info.run_id)) == ["claims.csv", "claims.md"]


def test_an_undecided_claim_says_how_many_seeds_would_decide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store(tmp_path)
    for seed, (base, ours) in enumerate([(20.0, 21.5), (21.0, 21.2), (22.0, 23.9)]):
        store.log_run("claimsdemo", "table4", "baseline", {"segm_AP": base}, seed=seed)
        store.log_run("claimsdemo", "table4", "baseline + ShapeProp", {"segm_AP": ours}, seed=seed)
    (tmp_path / "s.yaml").write_text(SUITE)
    result = claims_cli(store, tmp_path / "s.yaml", tmp_path / "out", "--no-log")
    assert result.exit_code == 0, result.output
    plain = read_csv_lines(tmp_path / "out" / "claims.csv")[("plain", "", "mask AP")]
    differences = [1.5, 0.2, 1.9]
    from statsmodels.stats.power import TTestPower

    # the paper's +1.1 at the observed std, two-sided at the family's Bonferroni level (one test here)
    want = math.ceil(
        TTestPower().solve_power(effect_size=1.1 / statistics.stdev(differences), alpha=0.05, power=0.8)
    )
    assert plain["verdict"] == "undecided" and int(float(plain["seeds_needed"])) == want
    md = (tmp_path / "out" / "claims.md").read_text()
    assert f"undecided: {want} seeds for 80 % power on the paper's difference" in md


def test_runs_of_an_earlier_suite_config_are_not_paired(tmp_path, monkeypatch):
    """A claim pairs the runs of the suite file as it reads now: seeds run under an earlier version of
    the file (another schedule here; another benchmark version in reports/mini) are left out, even
    where they would complete a pair."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text(SUITE.replace("max_steps: 2", "max_steps: 3"))
    older = {
        (spec.row, spec.seed): spec.key for spec in expand(with_seeds(load_suite(path), "mini", 4), "mini")
    }
    path.write_text(SUITE)
    now = {(spec.row, spec.seed): spec.key for spec in expand(load_suite(path), "mini")}
    store = Store(tmp_path)
    for seed, (base, ours) in enumerate([(20.0, 21.5), (21.0, 22.2), (22.0, 23.9)]):
        for row, ap in (("baseline", base), ("baseline + ShapeProp", ours)):
            store.log_run("claimsdemo", "table4", row, {"segm_AP": ap}, seed=seed, key=now[row, seed])
    for row, ap in (("baseline", 20.0), ("baseline + ShapeProp", 60.0)):  # seed 3, older config only
        store.log_run("claimsdemo", "table4", row, {"segm_AP": ap}, seed=3, key=older[row, 3])
    store.log_run("claimsdemo", "table4", "baseline", {"segm_AP": 0.0}, seed=0, key=older["baseline", 0])

    result = claims_cli(store, path, tmp_path / "out", "--no-log")
    assert result.exit_code == 0, result.output
    plain = read_csv_lines(tmp_path / "out" / "claims.csv")[("plain", "", "mask AP")]
    assert (plain["ours_n"], plain["baseline_n"]) == ("3", "3")
    assert float(plain["mean"]) == pytest.approx(statistics.mean([1.5, 1.2, 1.9]), abs=0.01)
    assert (
        "3 finished run(s) of claimsdemo with a config its suite file no longer gives"
        in (tmp_path / "out" / "claims.md").read_text()
    )


def test_a_sequential_design_judges_at_its_look_and_keeps_a_stopped_claim(store, tmp_path, monkeypatch):
    """Under `run --until-decided`'s design the family is split by Bonferroni and each line tested
    at its look's level; a claim stopped at a look is judged on that look's seeds only."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(SUITE)
    design = Sequential(first=2, step=1, max_seeds=6, stopped={"plain|": 2})
    write_design(store.client, "claimsdemo", "mini", design)
    result = claims_cli(store, tmp_path / "s.yaml", tmp_path / "out", "--no-log")
    assert result.exit_code == 0, result.output
    lines = read_csv_lines(tmp_path / "out" / "claims.csv")
    plain = lines[("plain", "", "mask AP")]
    assert int(plain["n"]) == 2 and plain["differences"] == "0:+2.00 1:+2.50"  # seed 2 came after its stop
    p = t_p(DIFF["segm_AP"][:2])
    family = sum(1 for key in lines if key[2] == "mask AP")  # every line of the family, tested or not
    assert float(plain["p_adjusted"]) == pytest.approx(min(1.0, p * family), abs=1e-4)
    assert float(plain["level"]) == pytest.approx(design.level(2), abs=1e-4)
    assert plain["adjustment"] == f"Bonferroni over {family}, sequential"
    fraction = lines[("per fraction", "data.data_fraction=0.1", "mask AP")]
    assert float(fraction["level"]) == pytest.approx(design.level(3), abs=1e-4)


def test_claims_without_runs_read_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store(tmp_path)
    store.experiment("other")  # a store, but no run of this suite
    (tmp_path / "s.yaml").write_text(SUITE)
    result = claims_cli(store, tmp_path / "s.yaml", tmp_path / "out", "--no-log")
    assert result.exit_code == 0, result.output
    md = (tmp_path / "out" / "claims.md").read_text()
    assert "## claimsdemo\n\nAll 5 claims are missing: no finished run of their rows.\n" in md
    with (tmp_path / "out" / "claims.csv").open() as handle:
        lines = list(csv.DictReader(handle))
    # every claim and metric: three each, one for the claim of two best-overlap columns
    assert len(lines) == 3 + 3 + 3 + 1 + 3 and {line["verdict"] for line in lines} == {"missing"}


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
        (("direction: none, margin: 1.0", "direction: none"), "claims[4].direction: a margin goes with direction 'none'"),
        (("paper: +1.1, direction: higher", "paper: +1.1, direction: higher, margin: 1"), "claims[0].margin: a margin goes with direction 'none'"),
        (("margin: 1.0", "margin: -1.0"), "claims[4].margin: Input should be greater than 0"),
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
            # rows not in the paper (Table 1's box-mask floor) have no number, like the R-50 oracle
            difference = ap.get(cell_key(ours), math.nan) - ap.get(cell_key(base), math.nan)
            if math.isnan(difference):
                assert claim.paper is None, claim.claim
                continue
            assert claim.paper == pytest.approx(difference, abs=1e-9), claim.claim
            checked += 1
    assert checked == 35  # with Table 1's two "Mask^X vs baseline" checks


def test_ap_claims_hold_the_test_images_when_runs_carry_their_coco_matches(tmp_path, monkeypatch):
    """Runs evaluated by pycocotools with their per-image matches logged (as the experiment does):
    the mask- and box-AP lines get the image term; a run whose tables do not give back its logged
    AP falls back to the seeds, and the report says so."""
    from shapeprop.eval.coco import evaluate_coco
    from tests.helpers.coco_eval import CLASSES as EVAL_CLASSES
    from tests.helpers.coco_eval import _detections, _records

    monkeypatch.chdir(tmp_path)
    records = _records(12)
    detections = _detections(records)
    rng = np.random.default_rng(7)
    store = Store(tmp_path)
    logged = {}
    for seed in range(3):
        for row, keep in (("baseline", 0.7), ("baseline + ShapeProp", 0.9)):
            kept = [
                d for d in detections if rng.uniform() < keep
            ]  # the better row keeps more true detections
            metrics, matches, gts = evaluate_coco(records, kept, EVAL_CLASSES, matches=True)
            folder = tmp_path / f"{row}-{seed}"
            folder.mkdir()
            matches.to_csv(folder / "coco_matches.csv", index=False)
            gts.to_csv(folder / "coco_gt.csv", index=False)
            values = {"segm_AP": metrics["segm_AP"], "bbox_AP": metrics["bbox_AP"]}
            if row == "baseline" and seed == 2:
                values["bbox_AP"] += 1.0  # its tables no longer give back its logged box AP
            logged[row, seed] = values
            artifacts = {name: folder / name for name in ("coco_matches.csv", "coco_gt.csv")}
            store.log_run("claimsdemo", "table4", row, values, seed=seed, artifacts=artifacts)
    (tmp_path / "s.yaml").write_text(SUITE)
    result = claims_cli(store, tmp_path / "s.yaml", tmp_path / "out", "--no-log")
    assert result.exit_code == 0, result.output
    lines = read_csv_lines(tmp_path / "out" / "claims.csv")
    mask = lines[("plain", "", "mask AP")]
    differences = [
        logged["baseline + ShapeProp", s]["segm_AP"] - logged["baseline", s]["segm_AP"] for s in range(3)
    ]
    assert float(mask["mean"]) == pytest.approx(statistics.mean(differences), abs=1e-4)
    assert mask["sources"] == "seeds + images" and float(mask["image_se"]) > 0.1  # 12 images: a wide term
    assert float(mask["ci_high"]) - float(mask["mean"]) > scipy.stats.t.isf(0.025, 2) * float(mask["seed_se"])
    assert lines[("plain", "", "box AP")]["sources"] == "seeds"
    md = (tmp_path / "out" / "claims.md").read_text()
    assert (
        "- claimsdemo, box AP: seeds only (a run has per-image tables that do not give back its logged value)"
        in md
    )


def test_a_suite_with_two_families_names_each_in_its_adjustment_line():
    """Table 1 adjusts the paper's claims and the miniature's checks apart: the line saying how must
    tell the two "mask AP: Holm over ..." apart; a suite of one family keeps the short form."""
    part = pandas.DataFrame(
        {
            "family": ["claims", "claims", "miniature checks", "miniature checks"],
            "metric": ["mask AP", "box AP", "mask AP", "box AP"],
            "adjustment": ["Holm over 8", "Holm over 8", "Holm over 6", ""],
        }
    )
    assert family_summary(part) == (
        "claims, mask AP: Holm over 8; claims, box AP: Holm over 8; miniature checks, mask AP: Holm over 6"
    )
    one = part[part["family"] == "claims"]
    assert family_summary(one) == "mask AP: Holm over 8; box AP: Holm over 8"


def test_a_family_with_no_tested_line_is_not_said_to_be_adjusted():
    """Table 4 before its More boxes rows run: Fig. 9's best-overlap family has no line to test, and
    its adjustment line must not read "Holm over 0"."""
    tested = {"n": 3, "mean": 2.0, "std": 1.0, "ci_low": -0.5, "ci_high": 4.5, "p": 0.1, "image_se": 0.1}
    untested = {"n": 0, "mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "image_se": math.nan}  # fmt: skip
    lines = pandas.DataFrame(
        [
            {"suite": "s", "family": family, "metric": metric, "direction": "higher", "paper": 1.0, "margin": math.nan, "test": "difference"}
            | values
            for family, metric, values in [("claims", "mask AP", tested), ("overlap", "shape IoU", untested)]
        ]
    )  # fmt: skip
    judged = judge(lines, plan=False)
    assert list(judged["adjustment"]) == ["Holm over 1", ""]
    assert list(judged["verdict"]) == [UNDECIDED, "missing"]
    assert family_summary(judged) == "claims, mask AP: Holm over 1"
