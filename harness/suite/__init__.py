"""Suites: YAML files that expand into fully resolved, keyed run specs.

A suite names a paper table or figure, a partial base config, rows (label + method +
overrides), grid axes and profiles (`full`, `mini`). `load_suite` parses and validates a file;
every problem is reported with the file, line and key path, and a misspelt key gets the closest
valid key as a suggestion. `expand` resolves every run (the order is in `expand.py`) and keys
each one (`keys.py`). The package:

    schema.py       the suite file's models, `RunSpec`, `SuiteError`
    positions.py    YAML with the line of every key
    problems.py     problems collected and reported at their file and line
    config_keys.py  the experiment config's dotted keys and their types
    load.py         reading and checking a suite file
    expand.py       a suite and profile into runs
    keys.py         run keys
"""

from harness.suite.config_keys import config_key_problem
from harness.suite.expand import expand, parse_overrides, profile_seeds, with_seeds
from harness.suite.keys import KEY_SCHEME, run_key
from harness.suite.load import SUITES_DIR, dataset_names, find_suite_file, load_suite, parse_suite
from harness.suite.schema import REPRODUCES, DatasetMapping, Profile, Row, RunSpec, Suite, SuiteError

__all__ = [
    "KEY_SCHEME",
    "REPRODUCES",
    "SUITES_DIR",
    "DatasetMapping",
    "Profile",
    "Row",
    "RunSpec",
    "Suite",
    "SuiteError",
    "config_key_problem",
    "dataset_names",
    "expand",
    "find_suite_file",
    "load_suite",
    "parse_overrides",
    "parse_suite",
    "profile_seeds",
    "run_key",
    "with_seeds",
]
