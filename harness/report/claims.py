"""The paper's claims (the `claims:` of the suite files) tested on the finished runs: pairing and wording.

A claim compares the runs of row `ours` with those of row `baseline` of one suite: per seed (and
value of the claim's `by` key) the difference ours - baseline, for mask AP, IoU@GT and box AP, or
for the claim's own pair of metrics. Where every run of a comparison carries its per-image table
(`coco_matches.csv` + `coco_gt.csv` for AP, `gt_box_masks.csv` for IoU@GT, the CSV of an artifact
metric), the interval holds the variance of the test images as well as that of the seeds; else it
holds the seeds only, and says so. The statistics are `harness.report.inference`'s.

Multiplicity: the lines of one family (a suite's claims, or those naming the same `family`, one
family per metric) are adjusted together, Holm for the verdict, Benjamini-Hochberg's q beside it.
A suite run with `run --until-decided` is judged at the level of its look (inference.Sequential).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.report import claim_images, inference
from harness.report.claim_images import ReadTable, is_artifact_metric
from harness.report.runs import PARAM_PREFIX, current_keys, select, without_older_configs
from harness.suite import SUITES_DIR, Suite, find_suite_file, load_suite

if TYPE_CHECKING:
    import pandas

    from harness.suite.schema import Claim

#: The metrics every claim compares unless it names its own pair (MLflow name -> display name).
METRICS = {"segm_AP": "mask AP", "gtbox_mask_iou": "IoU@GT", "bbox_AP": "box AP"}
COLUMNS = (
    "suite", "family", "claim", "ours", "baseline", "by", "metric", "primary", "direction", "paper", "margin",
    "n", "mean", "std", "differences", "sources", "seed_se", "image_se", "ci_low", "ci_high",
    "test", "p", "p_adjusted", "adjustment", "q_bh", "level", "verdict", "seeds_needed",
    "ours_mean", "ours_std", "ours_n", "baseline_mean", "baseline_std", "baseline_n",
)  # fmt: skip


def claim_suites(suite: str | None = None, directory: Path = SUITES_DIR) -> list[Suite]:
    """The suites with claims: `suite` (a file, or a name under `directory`), else all of `directory`."""
    if suite is None:
        paths = sorted(directory.glob("*.yaml"))
    else:
        paths = [find_suite_file(suite, directory)]
    loaded = [load_suite(path) for path in paths]
    return [s for s in loaded if s.claims or suite is not None]


def add_artifact_metrics(
    runs: pandas.DataFrame, metrics: Sequence[str], read_table: ReadTable
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


# --------------------------------------------------------------------------- one claim's lines


def _row_values(runs: pandas.DataFrame, metric: str) -> pandas.Series:
    """The metric by seed (NaN where a run lacks it: missing is never zero)."""
    import pandas

    if not len(runs) or metric not in runs:
        return pandas.Series(dtype=float, index=pandas.Index(runs["seed"] if len(runs) else [], name="seed"))
    return pandas.to_numeric(runs[metric], errors="coerce").set_axis(runs["seed"])


def claim_lines(
    suite: str,
    claim: Claim,
    runs: pandas.DataFrame,
    read_table: ReadTable | None = None,
    cache: dict | None = None,
    stopped: dict[str, int] | None = None,
) -> tuple[list[dict], list[str]]:
    """One line per (value of `by`, metric) of one claim, on the selected runs of its suite, with
    its estimate (not yet adjusted for its family), and notes on the image term. `stopped`: the
    claims (`<claim>|<by>`) a sequential design stopped, judged on their first that many seeds."""
    pairs = [(claim.metric.ours, claim.metric.baseline)] if claim.metric else [(m, m) for m in METRICS]
    by = PARAM_PREFIX + claim.by if claim.by else None
    ours_runs = runs[runs["row"] == claim.ours] if len(runs) else runs
    base_runs = runs[runs["row"] == claim.baseline] if len(runs) else runs
    values: list = [None]
    if by is not None and len(runs) and by in runs:
        found = set(ours_runs[by].dropna()) | set(base_runs[by].dropna())
        values = sorted(found, key=_number_first) or [None]
    lines, notes = [], []
    cache = {} if cache is None else cache
    for value in values:
        ours = ours_runs if value is None else ours_runs[ours_runs[by] == value]
        base = base_runs if value is None else base_runs[base_runs[by] == value]
        for i, (ours_metric, base_metric) in enumerate(pairs):
            a, b = _row_values(ours, ours_metric).dropna(), _row_values(base, base_metric).dropna()
            differences = (a - b).dropna().sort_index()  # only the seeds both rows have
            by_text = "" if value is None else f"{claim.by}={value}"
            if stopped and f"{claim.claim}|{by_text}" in stopped:
                differences = differences.iloc[: stopped[f"{claim.claim}|{by_text}"]]
            name = METRICS.get(ours_metric, ours_metric)
            if ours_metric != base_metric:
                name = f"{ours_metric} vs {base_metric}"
            image_se = math.nan
            if read_table is not None and len(differences) >= 2:
                image_se, note = claim_images.line_image_se(
                    ours, base, list(differences.index), (ours_metric, base_metric), read_table, cache
                )
                if note:
                    notes.append(f"{suite}, {name}: {note}")
            est = inference.estimate(differences.tolist(), image_se)
            line = {
                "suite": suite,
                "family": claim.family or "claims",
                "claim": claim.claim,
                "ours": claim.ours,
                "baseline": claim.baseline,
                "by": by_text,
                "metric": name,
                "primary": i == 0,  # the paper's metric (mask AP), or the claim's own
                "direction": claim.direction,
                "paper": claim.paper if i == 0 and claim.paper is not None else math.nan,
                "margin": claim.margin if claim.margin is not None else math.nan,
                "differences": " ".join(f"{seed}:{d:+.2f}" for seed, d in differences.items()),
                "sources": est.sources,
                **{k: getattr(est, k) for k in ("n", "mean", "std", "seed_se", "image_se")},
                **{k: getattr(est, k) for k in ("ci_low", "ci_high")},
            }
            if claim.direction == "none":
                line.update(test="equivalence", p=inference.equivalence_p(est, claim.margin))
            else:
                line.update(test="difference", p=est.p)
            for side, series in (("ours", a), ("baseline", b)):
                line[f"{side}_mean"] = series.mean() if len(series) else math.nan
                line[f"{side}_std"] = series.std(ddof=1) if len(series) > 1 else math.nan
                line[f"{side}_n"] = len(series)
            lines.append(line)
    return lines, notes


def _number_first(value) -> tuple:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


# --------------------------------------------------------------------------- families and verdicts


def judge(
    lines: pandas.DataFrame, design: inference.Sequential | None = None, plan: bool = True
) -> pandas.DataFrame:
    """Adjust each family's p (suite, family, metric) and give each line its verdict and, when
    undecided (and `plan`), the seeds that would decide it. Fixed design: Holm at ALPHA. With a
    sequential `design`: Bonferroni within the family at the level of the line's look."""
    data = lines.copy()
    for column in ("p_adjusted", "q_bh", "level", "seeds_needed"):
        data[column] = math.nan
    data["adjustment"], data["verdict"] = "", ""
    for _, family in data.groupby(["suite", "family", "metric"], sort=False):
        p = family["p"].to_numpy(dtype=float)
        holm, bh = inference.adjust(p)
        data.loc[family.index, "q_bh"] = bh
        if design is None:
            size = int((~np.isnan(p)).sum())
            data.loc[family.index, "p_adjusted"] = holm
            data.loc[family.index, "level"] = inference.ALPHA
            data.loc[family.index, "adjustment"] = f"Holm over {size}" if size else ""  # none tested yet
        else:
            # every line counts, tested yet or not: a family's split of alpha may not change between looks
            size = len(family)
            data.loc[family.index, "p_adjusted"] = np.minimum(1.0, p * size)
            data.loc[family.index, "level"] = [design.level(int(n)) for n in family["n"]]
            data.loc[family.index, "adjustment"] = f"Bonferroni over {size}, sequential"
        for index in family.index:
            line = data.loc[index]
            data.at[index, "verdict"] = verdict(line)
            if plan and data.at[index, "verdict"] == UNDECIDED:
                alpha = (design.alpha if design else inference.ALPHA) / max(size, 1)
                target = line["paper"] if not math.isnan(line["paper"]) else line["mean"]
                needed = inference.seeds_for_power(
                    line["std"], line["image_se"], target, alpha,
                    margin=None if line["direction"] != "none" else line["margin"],
                )  # fmt: skip
                data.at[index, "seeds_needed"] = math.nan if needed is None else needed
    return data


UNDECIDED = "undecided"


def verdict(line) -> str:
    """The direction of a decided difference and how its size compares with the paper's (within
    its 95 % interval), or equivalence; "undecided" while the adjusted p is above the level."""
    if line["n"] == 0:
        return "missing"
    if line["n"] < 2 or math.isnan(line["p_adjusted"]) or line["p_adjusted"] > line["level"]:
        return UNDECIDED
    if line["direction"] == "none":
        return f"no difference (within ±{line['margin']:g}), as the paper"
    sign = 1 if line["direction"] == "higher" else -1
    if sign * line["mean"] < 0:
        return "the other direction than the paper"
    paper = line["paper"]
    if math.isnan(paper):
        return "the paper's direction"
    low, high = sorted((sign * line["ci_low"], sign * line["ci_high"]))
    if low > sign * paper:
        return "the paper's direction, larger than the paper's"
    if high < sign * paper:
        return "the paper's direction, smaller than the paper's"
    return "the paper's direction, of the paper's size"


def evaluate(
    suites: Sequence[Suite],
    fetch: Callable[[Suite], pandas.DataFrame],
    profile: str,
    read_table: ReadTable,
    design: Callable[[Suite], inference.Sequential | None] = lambda suite: None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[pandas.DataFrame, list[str]]:
    """Every claim of `suites` on the FINISHED runs of `profile` (`fetch(suite)`: the suite's runs,
    those of another config than the suite file gives now, `overrides` applied, left out), judged
    family by family (`design(suite)`: its sequential design, if it was run until decided)."""
    import pandas

    parts, notes, cache = [], [], {}
    for suite in suites:
        fetched = fetch(suite)
        current = current_keys([suite], profile, overrides, fetched)
        fetched, older = without_older_configs(fetched, profile, current)
        notes += older
        other = select(fetched, profile, ["row"]).other_profiles
        if other and not (fetched["profile"] == profile).any():
            found = ", ".join(f"{name} ({n} runs)" for name, n in sorted(other.items()))
            notes.append(
                f"{suite.name}: no runs of profile '{profile}'; the store has {found}: use --profile"
            )
        lines, sequential = [], design(suite)
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
            stopped = sequential.stopped if sequential else None
            got, image_notes = claim_lines(suite.name, claim, runs, read_table, cache, stopped)
            lines += got
            notes += image_notes
        if lines:
            parts.append(judge(pandas.DataFrame(lines), sequential))
    data = pandas.concat(parts, ignore_index=True) if parts else pandas.DataFrame(columns=list(COLUMNS))
    return data[list(COLUMNS)], list(dict.fromkeys(notes))


# --------------------------------------------------------------------------- text


def _signed(value: float, digits: int = 2) -> str:
    return "missing" if math.isnan(value) else f"{value:+.{digits}f}"


def _mean_std(mean: float, std: float, n: int) -> str:
    if not n:
        return "missing"
    return f"{mean:.1f}" + (f" ± {std:.2f}" if n > 1 else "") + f" (n={n})"


def _p(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.2g}" if value >= 0.001 else f"{value:.0e}"


TEXT_COLUMNS = (
    "claim",
    "metric",
    "paper",
    "ours - baseline, per seed",
    "95 % CI",
    "p (adjusted)",
    "verdict",
    "ours",
    "baseline",
)


def text_cells(line: dict) -> list[str]:
    """One line of `evaluate`'s table as the text of TEXT_COLUMNS ("missing" where no runs)."""
    ci, p = "", ""
    if not math.isnan(line["ci_low"]):
        ci = f"[{_signed(line['ci_low'])}, {_signed(line['ci_high'])}] {line['sources']}"
    if not math.isnan(line["p"]):
        test = "TOST " if line["test"] == "equivalence" else ""
        p = f"{test}{_p(line['p'])} ({_p(line['p_adjusted'])})"
    difference = "missing"
    if line["n"]:
        seeds = ", ".join(d.split(":")[1] for d in line["differences"].split())
        difference = (
            f"**{_signed(line['mean'])}** (n={line['n']}: {seeds})" if line["n"] > 1 else f"{seeds} (n=1)"
        )
    words = line["verdict"]
    if words == UNDECIDED and line["n"] >= 2:
        needed = line["seeds_needed"]
        what = (
            "equivalence"
            if line["direction"] == "none"
            else "the paper's difference"
            if not math.isnan(line["paper"])
            else "this difference"
        )
        if line["direction"] == "none":
            words += " (equivalence not shown)"
        if not math.isnan(needed) and needed <= line["n"]:
            words += f": its {line['n']} seeds had 80 % power on {what}"
            if not math.isnan(line["paper"]) and not line["ci_low"] <= line["paper"] <= line["ci_high"]:
                words += ", which its interval excludes"
        elif not math.isnan(needed):
            words += f": {needed:.0f} seeds for 80 % power on {what}"
        elif line["sources"] == "seeds + images":
            words += f": no number of seeds decides {what} with the test images' term (±{line['image_se']:.2f}): test on more images"
        else:
            words += f": more than {inference.MAX_SEEDS} seeds for 80 % power on {what}"
    paper = "" if math.isnan(line["paper"]) else f"{line['paper']:+.1f}"
    if line["direction"] == "none":
        paper = (paper + " " if paper else "") + f"(none, ±{line['margin']:g})"
    return [
        line["claim"] + (f" [{line['by']}]" if line["by"] else ""),
        line["metric"],
        paper,
        difference,
        ci,
        p,
        words,
        _mean_std(line["ours_mean"], line["ours_std"], line["ours_n"]),
        _mean_std(line["baseline_mean"], line["baseline_std"], line["baseline_n"]),
    ]


def family_summary(part: pandas.DataFrame) -> str:
    """How a suite's lines were adjusted, family by family: "mask AP: Holm over 8; ...", each
    prefixed with its family's name where the suite has more than one (its claims, its checks)."""
    named = part["family"].nunique() > 1
    return "; ".join(
        f"{family + ', ' if named else ''}{metric}: {adjustment}"
        for (family, metric, adjustment), _ in part.groupby(["family", "metric", "adjustment"], sort=False)
        if adjustment
    )


def to_markdown(data: pandas.DataFrame, title: str, notes: Sequence[str]) -> str:
    """claims.md: a section per suite, a line per claim x value of `by` x metric."""
    lines = [f"# {title}", "", *EXPLANATION, ""]
    for suite, part in data.groupby("suite", sort=False):
        if not (part["ours_n"] + part["baseline_n"]).any():  # a suite not run: one line, not a table
            count = part["claim"].nunique()
            claims, their = (f"All {count} claims are", "their") if count > 1 else ("The claim is", "its")
            lines += [f"## {suite}", "", f"{claims} missing: no finished run of {their} rows.", ""]
            continue
        families = family_summary(part)
        lines += [
            f"## {suite}",
            "",
            f"Families (adjusted together): {families}." if families else "",
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
    "`claims:`), paired by seed and by the value in brackets. Per metric: the mean of the per-seed",
    "differences ours - baseline (each seed's difference after the colon), its 95 % interval and the",
    "two-sided p of no difference (Student t). The interval holds the variance between seeds and, where",
    "every run carries its per-image tables (*seeds + images*), that of the test images, from a paired",
    "bootstrap of the images; *seeds* marks an interval without the image term. A claim that the paper",
    "found no difference is tested for equivalence within its margin (TOST). The p in brackets is",
    "adjusted within the family (Holm; claims.csv also has the Benjamini-Hochberg q); the verdict uses",
    "it at 5 %: the paper's direction, and whether the paper's number lies within, below (*smaller*) or",
    "above (*larger*) the interval; the other direction; or *undecided*, with the seeds that would give",
    "80 % power for the paper's difference at the observed variance (at the family's Bonferroni level).",
    "The paper's difference is in mask AP; IoU@GT and box AP are judged on direction and their own",
    "data. Percentage points; *ours* and *baseline* are each row's mean ± std over its runs.",
)
