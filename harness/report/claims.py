"""The paper's claims (the `claims:` of the suite files) tested on the finished runs, paired by seed.

A claim compares the runs of row `ours` with those of row `baseline` of one suite: per seed (and
value of the claim's `by` key) the difference ours - baseline, for mask AP, IoU@GT and box AP, or
for the claim's own pair of metrics. Per metric: n, mean, sample std, the 95 % confidence interval
of the mean difference (Student t), a two-sided exact sign test, and a verdict on the paper's side.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.report.runs import PARAM_PREFIX, select
from harness.suite import Suite, load_suite

if TYPE_CHECKING:
    import pandas

    from harness.suite.schema import Claim

#: The metrics every claim compares unless it names its own pair (MLflow name -> display name).
METRICS = {"segm_AP": "mask AP", "gtbox_mask_iou": "IoU@GT", "bbox_AP": "box AP"}
CONFIDENCE = 0.95
#: Where `report --claims` finds the claims: the suite files of this checkout.
SUITES_DIR = Path(__file__).resolve().parents[2] / "suites"
COLUMNS = (
    "suite", "claim", "ours", "baseline", "by", "metric", "direction", "paper", "n", "mean", "std",
    "ci_low", "ci_high", "positive", "nonzero", "sign_p", "verdict",
    "ours_mean", "ours_std", "ours_n", "baseline_mean", "baseline_std", "baseline_n",
)  # fmt: skip


@dataclass(frozen=True)
class Paired:
    """Statistics of paired differences; NaN where n is too small for them."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    positive: int  # differences > 0
    nonzero: int
    sign_p: float  # two-sided exact sign test (binomial, p = 1/2) over the non-zero differences


def paired_stats(differences: Sequence[float]) -> Paired:
    """Mean, sample std, `CONFIDENCE` interval of the mean (Student t) and sign test of `differences`."""
    from scipy.stats import binomtest, t

    values = [float(v) for v in differences if not math.isnan(v)]
    n, nan = len(values), math.nan
    positive = sum(v > 0 for v in values)
    nonzero = sum(v != 0 for v in values)
    sign_p = binomtest(positive, nonzero).pvalue if nonzero else nan
    mean = statistics.fmean(values) if n else nan
    if n < 2:
        return Paired(n, mean, nan, nan, nan, positive, nonzero, sign_p)
    std = statistics.stdev(values)
    half = t.ppf(0.5 + CONFIDENCE / 2, n - 1) * std / math.sqrt(n)
    return Paired(n, mean, std, mean - half, mean + half, positive, nonzero, sign_p)


def verdict(stats: Paired, direction: str) -> str:
    """ "supports" / "contradicts" when the interval excludes 0 on the paper's / the other side."""
    if stats.n == 0:
        return "missing"
    if stats.n < 2 or stats.ci_low <= 0 <= stats.ci_high:
        return "cannot decide"
    higher = stats.ci_low > 0
    return "supports" if higher == (direction == "higher") else "contradicts"


def claim_suites(suite: str | None = None, directory: Path = SUITES_DIR) -> list[Suite]:
    """The suites with claims: `suite` (a file, or a name under `directory`), else all of `directory`."""
    if suite is None:
        paths = sorted(directory.glob("*.yaml"))
    elif Path(suite).is_file():
        paths = [Path(suite)]
    elif (directory / f"{suite}.yaml").is_file():
        paths = [directory / f"{suite}.yaml"]
    else:
        raise ValueError(f"{suite}: no such suite file (looked for it and for {directory}/{suite}.yaml)")
    loaded = [load_suite(path) for path in paths]
    return [s for s in loaded if s.claims or suite is not None]


def is_artifact_metric(metric: str) -> bool:
    """`<file>.csv:<column>`: a column of a CSV artifact of the run, not a logged metric."""
    return ".csv:" in metric


def add_artifact_metrics(
    runs: pandas.DataFrame, metrics: Sequence[str], read_table: Callable[[str, str], pandas.DataFrame | None]
) -> tuple[pandas.DataFrame, list[str]]:
    """`runs` with a column per artifact metric: 100 x the column's mean in the run's CSV artifact
    (`read_table(run_id, file)`, None if the run has none); notes name the runs without it."""
    runs, notes = runs.copy(), []
    for metric in metrics:
        if not is_artifact_metric(metric) or metric in runs:
            continue
        file, column = metric.rsplit(":", 1)
        values = []
        for run_id, row, seed in zip(runs["run_id"], runs["row"], runs["seed"], strict=True):
            table = read_table(run_id, file)
            found = table is not None and column in table
            if not found:
                what = f"no {file} artifact" if table is None else f"no column '{column}' in {file}"
                notes.append(f"run {run_id} ('{row}', seed {seed}) has {what}; left out")
            values.append(100 * table[column].mean() if found else math.nan)
        runs[metric] = values
    return runs, notes


def _row_values(runs: pandas.DataFrame, metric: str) -> pandas.Series:
    """The metric by seed (NaN where a run lacks it: missing is never zero)."""
    import pandas

    if not len(runs) or metric not in runs:
        return pandas.Series(dtype=float, index=pandas.Index(runs["seed"] if len(runs) else [], name="seed"))
    return pandas.to_numeric(runs[metric], errors="coerce").set_axis(runs["seed"])


def claim_lines(suite: str, claim: Claim, runs: pandas.DataFrame) -> list[dict]:
    """One line per (value of `by`, metric) of one claim, on the selected runs of its suite."""
    pairs = [(claim.metric.ours, claim.metric.baseline)] if claim.metric else [(m, m) for m in METRICS]
    by = PARAM_PREFIX + claim.by if claim.by else None
    ours_runs = runs[runs["row"] == claim.ours] if len(runs) else runs
    base_runs = runs[runs["row"] == claim.baseline] if len(runs) else runs
    values: list = [None]
    if by is not None and len(runs) and by in runs:
        found = set(ours_runs[by].dropna()) | set(base_runs[by].dropna())
        values = sorted(found, key=_number_first) or [None]
    lines = []
    for value in values:
        ours = ours_runs if value is None else ours_runs[ours_runs[by] == value]
        base = base_runs if value is None else base_runs[base_runs[by] == value]
        for i, (ours_metric, base_metric) in enumerate(pairs):
            a, b = _row_values(ours, ours_metric).dropna(), _row_values(base, base_metric).dropna()
            differences = (a - b).dropna()  # only the seeds both rows have
            stats = paired_stats(differences.tolist())
            name = METRICS.get(ours_metric, ours_metric)
            line = {
                "suite": suite,
                "claim": claim.claim,
                "ours": claim.ours,
                "baseline": claim.baseline,
                "by": "" if value is None else f"{claim.by}={value}",
                "metric": name if ours_metric == base_metric else f"{ours_metric} vs {base_metric}",
                "direction": claim.direction,
                "paper": claim.paper if i == 0 and claim.paper is not None else math.nan,
                **vars(stats),
                "verdict": verdict(stats, claim.direction),
            }
            for side, series in (("ours", a), ("baseline", b)):
                line[f"{side}_mean"] = series.mean() if len(series) else math.nan
                line[f"{side}_std"] = series.std(ddof=1) if len(series) > 1 else math.nan
                line[f"{side}_n"] = len(series)
            lines.append(line)
    return lines


def _number_first(value) -> tuple:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def evaluate(
    suites: Sequence[Suite],
    fetch: Callable[[Suite], pandas.DataFrame],
    profile: str,
    read_table: Callable[[str, str], pandas.DataFrame | None],
) -> tuple[pandas.DataFrame, list[str]]:
    """Every claim of `suites` on the FINISHED runs of `profile` (`fetch(suite)`: the suite's runs)."""
    import pandas

    lines, notes = [], []
    for suite in suites:
        fetched = fetch(suite)
        other = select(fetched, profile, ["row"]).other_profiles
        if other and not (fetched["profile"] == profile).any():
            found = ", ".join(f"{name} ({n} runs)" for name, n in sorted(other.items()))
            notes.append(
                f"{suite.name}: no runs of profile '{profile}'; the store has {found}: use --profile"
            )
        for claim in suite.claims:
            cell = ["row"] + ([PARAM_PREFIX + claim.by] if claim.by else [])
            mine = fetched[fetched["row"].isin([claim.ours, claim.baseline])] if len(fetched) else fetched
            selection = select(mine, profile, cell)
            notes += selection.notes
            runs = selection.runs
            if claim.metric and len(runs):
                runs, missing = add_artifact_metrics(
                    runs, [claim.metric.ours, claim.metric.baseline], read_table
                )
                notes += missing
            lines += claim_lines(suite.name, claim, runs)
    data = pandas.DataFrame(lines, columns=list(COLUMNS))
    return data, list(dict.fromkeys(notes))


def _signed(value: float, digits: int = 2) -> str:
    return "missing" if math.isnan(value) else f"{value:+.{digits}f}"


def _mean_std(mean: float, std: float, n: int, signed: bool = False) -> str:
    if not n:
        return "missing"
    text = _signed(mean) if signed else f"{mean:.1f}"
    return text + (f" ± {std:.2f}" if n > 1 else "") + f" (n={n})"


TEXT_COLUMNS = (
    "claim",
    "metric",
    "paper",
    "ours - baseline",
    "95 % CI",
    "sign test",
    "verdict",
    "ours",
    "baseline",
)


def text_cells(line: dict) -> list[str]:
    """One line of `evaluate`'s table as the text of TEXT_COLUMNS ("missing" where no runs)."""
    ci, sign = "", ""
    if not math.isnan(line["ci_low"]):
        ci = f"[{_signed(line['ci_low'])}, {_signed(line['ci_high'])}]"
    if not math.isnan(line["sign_p"]):
        sign = f"p={line['sign_p']:.3g} ({line['positive']}/{line['nonzero']} > 0)"
    return [
        line["claim"] + (f" [{line['by']}]" if line["by"] else ""),
        line["metric"],
        "" if math.isnan(line["paper"]) else f"{line['paper']:+.1f}",
        _mean_std(line["mean"], line["std"], line["n"], signed=True),
        ci,
        sign,
        line["verdict"],
        _mean_std(line["ours_mean"], line["ours_std"], line["ours_n"]),
        _mean_std(line["baseline_mean"], line["baseline_std"], line["baseline_n"]),
    ]


def to_markdown(data: pandas.DataFrame, title: str, notes: Sequence[str]) -> str:
    """claims.md: a section per suite, a line per claim x value of `by` x metric."""
    lines = [f"# {title}", "", *EXPLANATION, ""]
    for suite, part in data.groupby("suite", sort=False):
        if not (part["ours_n"] + part["baseline_n"]).any():  # a suite not run: one line, not a table
            count = part["claim"].nunique()
            claims, their = (f"All {count} claims are", "their") if count > 1 else ("The claim is", "its")
            lines += [f"## {suite}", "", f"{claims} missing: no finished run of {their} rows.", ""]
            continue
        lines += [
            f"## {suite}",
            "",
            "| " + " | ".join(TEXT_COLUMNS) + " |",
            "|" + " --- |" * len(TEXT_COLUMNS),
        ]
        previous: tuple = ("", "")
        for line in part.to_dict("records"):
            cells = text_cells(line)
            if (line["claim"], line["by"]) == previous:
                cells[0] = ""  # the claim once per group of metrics
            else:
                rows = "" if line["claim"] == previous[0] else f"<br>{line['ours']} vs {line['baseline']}"
                cells[0] = f"**{cells[0]}**{rows}"
            previous = (line["claim"], line["by"])
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        lines.append("")
    return "\n".join(lines + [f"- {note}" for note in notes]) + "\n"


EXPLANATION = (
    "Each claim compares the runs of the row *ours* with those of the row *baseline* (the suite's",
    "`claims:`), paired by seed and by the value in brackets: per pair the difference ours - baseline,",
    "then its mean ± sample std over the n pairs, the 95 % confidence interval of the mean (Student t)",
    "and a two-sided exact sign test. Verdict: *supports* when the interval excludes 0 on the side the",
    "paper claims, *contradicts* when it excludes 0 on the other side, *cannot decide* when it contains",
    "0 or n < 2. The paper's difference is in mask AP; IoU@GT and box AP are judged in the same",
    "direction. Percentage points; *ours* and *baseline* are each row's mean ± std over its runs.",
)
