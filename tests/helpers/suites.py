"""Suite files for the suite tests: the tests' own suites, and a suite written from text."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.suite import SuiteError, load_suite
from tests.helpers import TEST_SUITES

ABLATIONS = TEST_SUITES / "ablations_like.yaml"


def write(folder: Path, text: str, name: str = "suite.yaml") -> Path:
    """`text` (dedented) as the suite file `name` in `folder` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def error_of(path: Path) -> str:
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    return str(info.value)
