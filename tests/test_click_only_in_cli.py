"""Only `harness/cli/` knows click: the library raises its own errors, which the CLI converts."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.errors import OptionError, UserError

HARNESS = Path(__file__).resolve().parents[1] / "harness"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_harness_module_outside_the_cli_imports_click():
    modules = [p for p in HARNESS.rglob("*.py") if HARNESS / "cli" not in p.parents]
    assert len(modules) > 20  # the walk found the library
    importers = [
        str(p.relative_to(HARNESS))
        for p in modules
        if any(name == "click" or name.startswith("click.") for name in imported_modules(p))
    ]
    assert importers == []


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
