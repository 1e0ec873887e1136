"""Which runs of the suites train the same model (`shapeprop.config.training_key`), and so train
it once when they share a runs folder (`harness.shared_training`):

    .venv/bin/python tools/shared_trainings.py --profile full

Prints each group of runs of one training key (suite, row, seed) and the count of trainings saved.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from harness.suite import SUITES_DIR, expand, load_suite
from shapeprop.config import training_key


def groups(suite_files: list[Path], profile: str) -> tuple[int, list[list[tuple[str, str, int]]]]:
    """The number of runs, and the groups of two or more runs that share a training key."""
    by_key: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    total = 0
    for path in suite_files:
        for spec in expand(load_suite(path), profile):
            by_key[training_key(spec.config)].append((spec.suite, spec.row, spec.seed))
            total += 1
    return total, [g for g in by_key.values() if len(g) > 1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="full", help="the suites' profile (full, mini, ...)")
    parser.add_argument("suites", nargs="*", type=Path, help="suite files (default: every file of suites/)")
    args = parser.parse_args()
    files = args.suites or sorted(SUITES_DIR.glob("*.yaml"))
    total, shared = groups(files, args.profile)
    for group in shared:
        print(" = ".join(f"{suite}: {row} (seed {seed})" for suite, row, seed in group))
    saved = sum(len(g) - 1 for g in shared)
    print(f"{args.profile}: {total} runs in {len(files)} suites, {total - saved} trainings ({saved} shared)")


if __name__ == "__main__":
    main()
