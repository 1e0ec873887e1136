"""Issue 41's targets, read from the committed archive as reports/mini/PROTOCOL.md (section 3) states them.

    .venv/bin/python tools/mini_targets.py                 # markdown on stdout
    .venv/bin/python tools/mini_targets.py --out reports/mini/targets.md

Reads the val runs of benchmark version 3 in `runs.jsonl` (Table 1's mini profile) and gives, per
direction, each row's mask AP and box AP on the unseen classes (mean, sample std, n seeds) and the
comparisons of means the protocol's targets 1-5 name: GrabCut below ShapeProp and >= 5 points below
the oracle; the baseline above the box-mask floor, Mask^X not below the baseline; the share of the
baseline-to-oracle gap ShapeProp closes (40-95 %); ShapeProp's seed std <= max(2 x the oracle's, 2);
box AP >= 30 in every row. The claims' verdicts (decided, Holm) are `shapeprop-bench report
--claims`'s, not this script's. A target reads "pending" until its rows have their 5 seeds.

It also gives each suite's training time and wall time, and checks the registration: the first
commit of PROTOCOL.md precedes the start of every val run of benchmark version 3 in the archive (a
run that started before it is listed by name).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from harness.run_tags import TRAINED_BY_TAG

MINI = Path(__file__).resolve().parents[1] / "reports" / "mini"
SEEDS = 5  # Table 1's seeds (PROTOCOL.md, section 3)
DIRECTIONS = ("non-voc -> voc", "voc -> non-voc")
METHODS = {  # the `method` tag of each Table 1 row, as the targets name them
    "box_masks": "box-mask floor",
    "grabcut": "GrabCut",
    "mask_rcnn": "baseline",
    "maskx": "Mask^X",
    "shapeprop": "ShapeProp",
    "oracle": "oracle",
}


@dataclass
class Row:
    mask: list[float]
    box: list[float]

    @property
    def n(self) -> int:
        return len(self.mask)

    def mean(self, metric: str = "mask") -> float:
        return statistics.fmean(getattr(self, metric))

    def std(self) -> float:
        return statistics.stdev(self.mask) if self.n > 1 else float("nan")


def registration(protocol: Path) -> datetime:
    """When PROTOCOL.md was first committed (its registration)."""
    log = subprocess.run(
        ["git", "log", "--format=%ct", "--", protocol.name],
        cwd=protocol.parent,
        capture_output=True,
        text=True,
    )
    times = log.stdout.split()
    if log.returncode != 0 or not times:  # not committed, or a repository with no commit yet
        raise SystemExit(f"{protocol}: not committed; register the protocol first")
    return datetime.fromtimestamp(int(times[-1]), timezone.utc)


def version3_val_runs(archive: Path) -> list[dict]:
    runs = []
    for number, line in enumerate(archive.read_text().splitlines(), 1):
        try:
            run = json.loads(line)
            options = json.loads(run["params"].get("data.options", "{}") or "{}")
        except (json.JSONDecodeError, KeyError) as error:
            raise SystemExit(f"{archive}, line {number}: not an archived run ({error})") from None
        if options.get("version") == 3 and run["params"].get("data.test_split") == "val":
            runs.append(run)
    return runs


def table1_row(run: dict) -> tuple[str, str] | None:
    """(direction, row as the targets name it) of an archived Table 1 run of the mini profile; None
    for any other run."""
    tags = run["tags"]
    if run["suite"] != "table1" or tags.get("profile") != "mini" or tags.get("method") not in METHODS:
        return None
    direction = next((d for d in DIRECTIONS if f"| {d} |" in tags["row"]), None)
    return None if direction is None else (direction, METHODS[tags["method"]])


def table1_run_folders(archive: Path, runs_dir: Path) -> list[tuple[dict, Path, str, str]]:
    """The version-3 val runs of Table 1 in `archive` whose finished run folder is in `runs_dir`
    (`run.sh`'s runs/mini/table1): (run, folder, direction, row)."""
    found = []
    for run in version3_val_runs(archive):
        place, folder = table1_row(run), runs_dir / run["run_key"]
        if place is not None and (folder / "evaluation.json").exists():
            found.append((run, folder, *place))
    return found


def table1_rows(runs: list[dict]) -> dict[tuple[str, str], Row]:
    rows: dict[tuple[str, str], Row] = {}
    for run in runs:
        place = table1_row(run)
        if place is None or "segm_AP" not in run["metrics"]:
            continue
        row = rows.setdefault(place, Row([], []))
        row.mask.append(run["metrics"]["segm_AP"])
        row.box.append(run["metrics"]["bbox_AP"])
    return rows


def _cell(row: Row | None) -> str:
    if row is None:
        return "-"
    std = f" ± {row.std():.1f}" if row.n > 1 else ""
    return f"{row.mean():.1f}{std} (n={row.n})"


def _verdict(met: bool, *rows: Row | None) -> str:
    if any(r is None or r.n < SEEDS for r in rows):
        return "pending" + (" (so far met)" if met else " (so far missed)")
    return "met" if met else "**missed**"


def targets(rows: dict[tuple[str, str], Row], direction: str) -> list[tuple[str, str, str]]:
    """(target, the figures, verdict) for one direction; a target whose rows are missing is skipped."""
    by_name = {name: rows.get((direction, name)) for name in METHODS.values()}
    floor, grabcut, base, maskx, ours, oracle = by_name.values()
    out = []

    def add(target: str, figures: str, met: bool, *needed: Row | None) -> None:
        out.append((target, figures, _verdict(met, *needed)))

    if grabcut and ours:
        add(
            "1. GrabCut below ShapeProp",
            f"{grabcut.mean():.1f} vs {ours.mean():.1f}",
            grabcut.mean() < ours.mean(),
            grabcut,
            ours,
        )
    if grabcut and oracle:
        gap = oracle.mean() - grabcut.mean()
        add("1. GrabCut >= 5 below the oracle", f"oracle - GrabCut = {gap:+.1f}", gap >= 5, grabcut, oracle)
    if base and floor:
        add(
            "2. baseline above the box-mask floor",
            f"{base.mean():.1f} vs {floor.mean():.1f}",
            base.mean() > floor.mean(),
            base,
            floor,
        )
    if maskx and base:
        add(
            "2. Mask^X not below the baseline",
            f"{maskx.mean():.1f} vs {base.mean():.1f}",
            maskx.mean() >= base.mean(),
            maskx,
            base,
        )
    if base and ours and oracle:
        share = (ours.mean() - base.mean()) / (oracle.mean() - base.mean())
        add(
            "3. ShapeProp closes 40-95 % of the baseline-to-oracle gap",
            f"{share:.0%}",
            0.40 <= share <= 0.95,
            base,
            ours,
            oracle,
        )
    if ours and oracle:
        bound = max(2 * oracle.std(), 2.0)
        add(
            "4. ShapeProp's seed std <= max(2 x oracle's, 2)",
            f"{ours.std():.2f} vs {bound:.2f}",
            ours.std() <= bound,
            ours,
            oracle,
        )
    present = {name: row for name, row in by_name.items() if row}
    if present:
        lowest = min(present, key=lambda name: present[name].mean("box"))
        add(
            "5. box AP >= 30 in every row",
            f"lowest: {lowest} {present[lowest].mean('box'):.1f}",
            all(row.mean("box") >= 30 for row in present.values()),
            *by_name.values(),
        )
    return out


def covered_seconds(intervals: list[tuple[float, float]]) -> float:
    """Seconds inside at least one (start, end) interval: the wall time a set of runs took, however
    many ran at once (a run resumed in a later session also counts the pause between)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total


def timing(runs: list[dict]) -> list[str]:
    """Per suite: finished runs, training time summed over them (train_s_per_step x steps, the timed
    steps alone; a run tagged `trained_by` started from another's training and adds none) and the
    wall time they covered."""
    lines = [
        "| suite | runs | training time summed over runs | wall time the runs covered |",
        "| --- | --- | --- | --- |",
    ]
    for suite in sorted({run["suite"] for run in runs}):
        mine = [run for run in runs if run["suite"] == suite and run.get("end_time")]
        train = sum(
            r["metrics"].get("train_s_per_step", 0.0) * float(r["tags"].get("max_steps", 0))
            for r in mine
            if TRAINED_BY_TAG not in r["tags"]
        )
        wall = covered_seconds([(r["start_time"] / 1000, r["end_time"] / 1000) for r in mine])
        lines.append(
            f"| {suite} | {len(mine)} | {train:,.0f} s ({train / 3600:.1f} h) | {wall:,.0f} s ({wall / 3600:.1f} h) |"
        )
    return lines


def render(archive: Path, protocol: Path) -> str:
    registered = registration(protocol)
    runs = version3_val_runs(archive)
    starts = [datetime.fromtimestamp(r["start_time"] / 1000, timezone.utc) for r in runs]
    early = [
        r["tags"].get("mlflow.runName", r["run_id"])
        for r, s in zip(runs, starts, strict=True)
        if s <= registered
    ]
    lines = [
        "# Issue 41's targets (val, benchmark version 3, Table 1 unseen classes)",
        "",
        f"From `{archive.name}` by `tools/mini_targets.py`. {len(runs)} val runs of benchmark version 3;",
        f"{protocol.name} first committed {registered:%Y-%m-%d %H:%M:%S} UTC; earliest run start "
        + (f"{min(starts):%Y-%m-%d %H:%M:%S} UTC." if starts else "(none)."),
        "Registration: "
        + (
            "every run started after it."
            if not early
            else f"**{len(early)} run(s) started before it**: " + "; ".join(early)
        ),
        "",
    ]
    rows = table1_rows(runs)
    for direction in DIRECTIONS:
        lines += [f"## {direction}", "", "| row | mask AP | box AP |", "| --- | --- | --- |"]
        for name in METHODS.values():
            row = rows.get((direction, name))
            box = f"{row.mean('box'):.1f}" if row else "-"
            lines.append(f"| {name} | {_cell(row)} | {box} |")
        lines += ["", "| target | figures (means over seeds) | verdict |", "| --- | --- | --- |"]
        lines += [f"| {t} | {f} | {v} |" for t, f, v in targets(rows, direction)]
        lines.append("")
    lines.append(
        "Decided claims (targets 1-3, 6) are `shapeprop-bench report --claims`'s verdicts, not this page's."
    )
    lines += ["", "## Time (2 CPU cores, two runs at a time)", "", *timing(runs)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--archive", type=Path, default=MINI / "runs.jsonl", help="archived runs (runs.jsonl)"
    )
    parser.add_argument("--protocol", type=Path, default=MINI / "PROTOCOL.md", help="the registered protocol")
    parser.add_argument("--out", type=Path, help="write the markdown here (default: stdout)")
    args = parser.parse_args()
    text = render(args.archive, args.protocol)
    if args.out:
        args.out.write_text(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
