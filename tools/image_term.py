"""How many test images a suite's claims need: the image term beside the seed term, by image count.

For every claim of a suite whose rows have FINISHED runs with per-image tables (mask AP, box AP,
IoU@GT), restricted to the first k test images (what `eval.max_images: k` evaluates) for each k:
the mean paired difference, its seed term (std / sqrt(n)) and image term (paired bootstrap of the
images, `harness.report.claim_images.image_term`), and the image term's share of the variance.

    python tools/image_term.py --suite ablations --profile mini --out reports/mini/image_term/image_term.md
"""

from __future__ import annotations

import argparse
import math
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from harness.report import claim_images, claims, inference
from harness.report.runs import fetch_runs, select
from harness.tracking import resolve_tracking_uri

COUNTS = (100, 250, 500, 1000)


def first_images(table: pd.DataFrame, count: int, ids: np.ndarray) -> pd.DataFrame:
    return table[table["image_id"].isin(ids[:count])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True)
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    client = MlflowClient(tracking_uri=resolve_tracking_uri(args.tracking_uri))
    (suite,) = claims.claim_suites(args.suite)
    runs = select(fetch_runs(client, suite.reproduces or "", suite.name), args.profile, ["row"]).runs
    tables: dict[tuple[str, str], pd.DataFrame] = {}

    def table(run_id: str, file: str) -> pd.DataFrame:
        if (run_id, file) not in tables:
            tables[run_id, file] = pd.read_csv(client.download_artifacts(run_id, file))
        return tables[run_id, file]

    lines = []
    for claim in suite.claims:
        if claim.metric is not None or claim.by is not None:
            continue
        ours, base = (runs[runs["row"] == row].set_index("seed") for row in (claim.ours, claim.baseline))
        seeds = sorted(set(ours.index) & set(base.index))
        if len(seeds) < 2:
            continue
        ids = np.sort(table(ours.at[seeds[0], "run_id"], "coco_gt.csv")["image_id"].unique())
        for count in COUNTS:
            if count > len(ids):
                continue

            def read(run_id: str, file: str, count: int = count, ids: np.ndarray = ids) -> pd.DataFrame:
                return first_images(
                    table(run_id, file), count, ids
                )  # recomputable keeps the evaluated categories

            for metric, name in claims.METRICS.items():
                got = {
                    side: [claim_images.recomputable(metric, frame.at[s, "run_id"], read) for s in seeds]
                    for side, frame in (("ours", ours), ("baseline", base))
                }
                full = [
                    float(a.value(np.ones((1, len(a.image_ids)), dtype=np.int64))[0] - b.value(np.ones((1, len(b.image_ids)), dtype=np.int64))[0])
                    for a, b in zip(got["ours"], got["baseline"], strict=True)
                ]  # fmt: skip
                cache: dict = {}
                image_se = claim_images.image_term(
                    got["ours"], got["baseline"], cache, lambda i, side: (side, i)
                )
                est = inference.estimate(full, image_se)
                share = image_se**2 / (image_se**2 + est.seed_se**2)
                lines.append(
                    {
                        "claim": claim.claim,
                        "metric": name,
                        "images": count,
                        "n": len(seeds),
                        "difference": est.mean,
                        "seed_se": est.seed_se,
                        "image_se": image_se,
                        "image_share": share,
                        "ci": f"[{est.ci_low:+.2f}, {est.ci_high:+.2f}]",
                    }
                )
    data = pd.DataFrame(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data.to_csv(args.out.with_suffix(".csv"), index=False, float_format="%.4f")
    text = [
        f"# The image term beside the seed term ({suite.name}, profile {args.profile}, {date.today()})",
        "",
        "Made by `bash reports/mini/image_term/run.sh` (the runs) and `python tools/image_term.py` (this",
        "table): the first k images of the synthetic **test** split, 1000 evaluated per run. seed SE =",
        "std of the per-seed differences / sqrt(n); image SE = paired bootstrap of the k images (1000",
        "draws); image share = image SE^2 / (image SE^2 + seed SE^2).",
        "",
        "| claim | metric | images | n | ours - baseline | seed SE | image SE | image share | 95 % CI |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for line in lines:
        text.append(
            f"| {line['claim']} | {line['metric']} | {line['images']} | {line['n']} | {line['difference']:+.2f} "
            f"| {line['seed_se']:.2f} | {line['image_se']:.2f} | {100 * line['image_share']:.0f} % | {line['ci']} |"
        )
    args.out.write_text("\n".join(text) + "\n")
    print("\n".join(text))
    if any(math.isnan(line["image_se"]) for line in lines):
        print("some lines have no image term (NaN): a run lacks its per-image tables")


if __name__ == "__main__":
    main()
