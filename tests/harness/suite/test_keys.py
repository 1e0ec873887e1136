"""Run keys: stable across loads and processes, made of the config and the suite name."""

from __future__ import annotations

import subprocess
import sys

from harness.suite import expand, load_suite, run_key
from tests.helpers.suites import ABLATIONS


def test_keys_are_stable_across_loads_and_processes():
    keys = [s.key for s in expand(load_suite(ABLATIONS), "mini")]
    assert keys == [s.key for s in expand(load_suite(ABLATIONS), "mini")]
    code = (
        "from harness.suite import load_suite, expand;"
        f"print(' '.join(s.key for s in expand(load_suite({str(ABLATIONS)!r}), 'mini')))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123"},
    )
    assert other.stdout.split() == keys


def test_key_is_the_config_and_the_suite_name():
    spec = expand(load_suite(ABLATIONS), "mini")[0]
    assert spec.key == run_key("test-ablations", spec.config)
    assert run_key("other-suite", spec.config) != spec.key
    changed = spec.config.model_copy(update={"seed": spec.config.seed + 100})
    assert run_key("test-ablations", changed) != spec.key
