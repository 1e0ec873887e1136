"""The library raises its own errors (`harness/errors.py`), which only `harness/cli/` turns into
click's (that no other harness module imports click: tests/test_architecture.py)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.errors import OptionError, UserError


@pytest.fixture
def failing_command(monkeypatch):
    """A `show` command that raises `error` (set by the test) instead of showing anything."""
    raised: list[Exception] = []

    @click.command()
    def failing() -> None:
        raise raised[0]

    import harness.cli.show

    monkeypatch.setattr(harness.cli.show, "show", failing)
    return raised


def test_a_user_error_is_printed_as_click_prints_its_own(failing_command):
    failing_command.append(UserError("run abc has no checkpoint"))
    result = CliRunner().invoke(main, ["show"])
    assert result.exit_code == 1
    assert "Error: run abc has no checkpoint" in result.output
    assert "Traceback" not in result.output


def test_an_option_error_names_the_option(failing_command):
    failing_command.append(OptionError("CUDA is not available here", "--device"))
    result = CliRunner().invoke(main, ["show"])
    assert result.exit_code == 2
    assert "Invalid value for --device: CUDA is not available here" in result.output


def test_library_warnings_reach_the_console_while_a_command_runs(capsys):
    import logging

    from harness.cli.options import echoed

    with echoed("harness.stored_runs"):
        logging.getLogger("harness.stored_runs").warning("run x is RUNNING, not FINISHED")
        logging.getLogger("harness.stored_runs").info("run x (baseline, seed 0)")
    out, err = capsys.readouterr()
    assert (out, err) == ("run x (baseline, seed 0)\n", "warning: run x is RUNNING, not FINISHED\n")
    assert logging.getLogger("harness.stored_runs").handlers == []  # only while the command runs
