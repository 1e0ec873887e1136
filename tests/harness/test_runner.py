"""`run` plans once: the plan the CLI shows is the one the runner runs (one look at the store)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from harness import runner, tracking
from harness.cli import main
from harness.runner import RunOptions, SuiteSummary
from tests.helpers import TEST_SUITES

TINY = TEST_SUITES / "tiny.yaml"


@pytest.fixture
def store_looks(monkeypatch) -> list[str]:
    """The suites whose keys' states were read from the store, in order."""
    looks: list[str] = []
    real = tracking.key_states

    def counted(uri, suite_name, keys):
        looks.append(suite_name)
        return real(uri, suite_name, keys)

    monkeypatch.setattr(tracking, "key_states", counted)
    return looks


def test_the_cli_hands_its_plan_to_the_runner(tmp_path, monkeypatch, store_looks):
    handed = []

    def run_suite(suite, options, planned=None):
        handed.append((options, planned))
        return SuiteSummary()

    monkeypatch.setattr(runner, "run_suite", run_suite)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(
        main,
        ["run", str(TINY), "--only", "nothing matches this", "--tracking-uri", uri],
        catch_exceptions=False,
    )
    assert result.exit_code != 0 and "no run of suite" in result.output  # planned, found nothing
    assert store_looks == ["test-tiny"] and handed == []

    result = CliRunner().invoke(
        main,
        ["run", str(TINY), "--only", "baseline", "--tracking-uri", uri, "--runs-dir", str(tmp_path / "runs"),
         "--no-preflight", "--force", "--executor", "local", "--workers", "2"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ((options, planned),) = handed
    assert store_looks == ["test-tiny", "test-tiny"]  # the second invocation's one look
    assert [p.spec.row for p in planned] == ["baseline"] and options.force
    assert (options.executor, options.workers, options.check) == ("local", 2, False)


def test_run_suite_without_a_plan_makes_one(tmp_path, store_looks):
    from harness.suite import load_suite

    summary = runner.run_suite(
        load_suite(TINY),
        RunOptions(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", only="no such row"),
    )
    assert summary == SuiteSummary() and store_looks == ["test-tiny"]
