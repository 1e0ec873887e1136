"""Record every suite x profile expansion (run identity and resolved config) as JSON.

`tests/data/expansions.json` is written by this script at each intentional suite edit (first before issue 18)
and is what `tests/harness/suite/test_expand_recorded.py` compares every later expansion with: a refactor must leave
every run and every resolved config as it was. Re-record only on purpose (a suite edit); this
writes `tests/data/expansions.json` and the identity key map `tests/data/expansion-keys.json`:

    python tests/record_expansions.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def record() -> list[dict]:
    from harness.suite import expand, load_suite

    out = []
    for path in sorted((ROOT / "suites").glob("*.yaml")) + sorted((ROOT / "tests" / "suites").glob("*.yaml")):
        suite = load_suite(path)
        for profile in suite.profile_names():
            for spec in expand(suite, profile):
                out.append(
                    {
                        "file": path.relative_to(ROOT).as_posix(),
                        "profile": profile,
                        "row": spec.row,
                        "method": spec.method,
                        "seed": spec.seed,
                        "axes": spec.axes,
                        "key": spec.key,
                        "config": spec.config.model_dump(mode="json"),
                    }
                )
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    runs = record()
    data = ROOT / "tests" / "data"
    (data / "expansions.json").write_text(json.dumps(runs, indent=1, sort_keys=True) + "\n")
    keys = {run["key"]: run["key"] for run in runs}  # each recorded key must stay what it is
    (data / "expansion-keys.json").write_text(json.dumps(keys, indent=1, sort_keys=True) + "\n")
