"""Where a row's spread over seeds comes from, from an archive of finished runs (issue 41).

For each row of a suite: per seed, mask AP, box AP (detection), IoU@GT (the masks on the GT boxes,
without detection) and the last logged training losses; then the std over seeds of each. A row
whose mask AP varies while box AP and the training losses do not has masks that generalise
differently per seed, not a detector or an optimisation that fails.

    python tools/seed_spread.py reports/mini/runs.jsonl --suite table1 --row ShapeProp --row Oracle
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

COLUMNS = {
    "segm_AP": "mask AP",
    "bbox_AP": "box AP",
    "gtbox_mask_iou": "IoU@GT",
    "loss_mask": "loss_mask",
    "loss_mil": "loss_mil",
    "loss_shape": "loss_shape",
}


def spread(archive: Path, suite: str, rows: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-seed table, std over seeds per row) of the archived runs of `suite` whose row label
    contains any of `rows`."""
    records = []
    for line in archive.read_text().splitlines():
        run = json.loads(line)
        row = run["tags"].get("row", "")
        if run["suite"] != suite or not any(r in row for r in rows):
            continue
        metrics = run["metrics"]
        records.append(
            {"row": row, "seed": int(run["tags"]["seed"])} | {c: metrics.get(k) for k, c in COLUMNS.items()}
        )
    if not records:
        raise SystemExit(f"{archive}: no finished run of suite {suite!r} whose row contains any of {rows}")
    table = pd.DataFrame(records).sort_values(["row", "seed"])
    return table, table.drop(columns="seed").groupby("row").std()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("archive", type=Path, help="runs.jsonl (shapeprop-bench archive export)")
    parser.add_argument("--suite", required=True)
    parser.add_argument("--row", action="append", required=True, help="part of a row label; repeatable")
    args = parser.parse_args()
    table, std = spread(args.archive, args.suite, args.row)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(table.round(2).to_string(index=False))
        print("\nstd over seeds")
        print(std.round(2).to_string())


if __name__ == "__main__":
    main()
