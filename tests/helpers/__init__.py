"""Code the tests share (imported as `tests.helpers...`; test modules never import each other).

Fixtures live in the `conftest.py` files; this package holds plain helpers: paths, data factories,
MLflow stores, the CLI run as a subprocess, stand-in suites.
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent  # the repository
TEST_SUITES = TESTS / "suites"  # the tests' own suite files
