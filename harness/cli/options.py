"""Options and arguments shared by the commands, each declared once with one help text."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from harness.plan import PlannedRun
    from harness.suite import Suite

tracking_uri_option = click.option(
    "--tracking-uri",
    metavar="URI",
    help="MLflow store. Default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here.",
)

runs_dir_option = click.option(
    "--runs-dir",
    default="runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Root of the per-run work directories (checkpoints, config, log).",
)

# `--set KEY=VALUE`, as detectron2's `opts` / MMDetection's `--cfg-options`: applied to every run
# after the suite and its profile; the value is read as YAML. On report and show it selects runs.
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="A config key's value (e.g. --set model.framework=detectron2; read as YAML): run, plan and "
    "status apply it to every run after the suite and profile; report and show pick the runs that "
    "have it. Repeatable.",
)


@dataclass(frozen=True)
class SuiteArgs:
    """What the suite commands (run, plan, status) share: the suite as loaded, the profile, the
    --only filters, the MLflow store, the runs folder and the --set values."""

    suite: Suite
    profile: str
    only: tuple[str, ...]
    tracking_uri: str
    runs_dir: str
    overrides: dict[str, Any]

    def plan(self, force: bool = False) -> list[PlannedRun]:
        """What `run` would do with each selected run (`harness.plan.plan`)."""
        from harness.plan import plan
        from harness.suite import SuiteError

        try:
            return plan(
                self.suite, self.profile, self.tracking_uri, self.only, force, self.runs_dir, self.overrides
            )
        except SuiteError as err:
            raise click.ClickException(str(err)) from None


def suite_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The SUITE argument and the options of the commands that expand a suite; the command
    receives them as one `SuiteArgs` (first argument), the suite loaded and checked."""

    @functools.wraps(command)
    def wrapper(
        suite: str,
        profile: str,
        only: tuple[str, ...],
        tracking_uri: str | None,
        runs_dir: str,
        overrides: tuple[str, ...],
        **options: Any,
    ) -> Any:
        from harness.tracking import resolve_tracking_uri

        loaded = load_suite_argument(suite)
        sets = parse_set(overrides)
        args = SuiteArgs(loaded, profile, only, resolve_tracking_uri(tracking_uri), runs_dir, sets)
        return command(args, **options)

    decorators = [
        click.argument("suite"),
        click.option(
            "--profile", default="full", show_default=True, help="Suite profile: full (the paper) or mini."
        ),
        click.option(
            "--only",
            multiple=True,
            metavar="FILTER",
            help="Only runs whose row label, method or key contains FILTER (or matches it as a glob). Repeatable.",
        ),
        tracking_uri_option,
        runs_dir_option,
        set_option,
    ]
    for decorator in reversed(decorators):
        wrapper = decorator(wrapper)
    return wrapper


def parse_set(overrides: tuple[str, ...]) -> dict[str, Any]:
    """The `--set` items as {dotted key: value}; a click error names every bad one."""
    from harness.suite import SuiteError, parse_overrides

    try:
        return parse_overrides(overrides)
    except SuiteError as err:
        raise click.ClickException(str(err)) from None


def load_suite_argument(suite_arg: str) -> Any:
    """The suite a SUITE argument names (a file, or a name under suites/); a click error if invalid."""
    from harness.suite import SuiteError, find_suite_file, load_suite

    try:
        return load_suite(find_suite_file(suite_arg, "suites"))
    except SuiteError as err:
        raise click.ClickException(str(err)) from None


def console() -> Any:
    """A rich console, wide enough for the tables when the output is a file or a pipe."""
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def escape(text: Any) -> str:
    """`text` with rich markup escaped (row labels, keys and errors are user text)."""
    from rich.markup import escape as rich_escape

    return rich_escape(str(text))


class _EchoHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            click.echo(f"warning: {record.getMessage()}", err=True)
        else:
            click.echo(record.getMessage())


@contextlib.contextmanager
def echoed(*loggers: str) -> Iterator[None]:
    """The messages of the library's `loggers` on the console while a command runs: info on
    stdout, warnings on stderr as "warning: ..."."""
    handler = _EchoHandler()
    saved = []
    for name in loggers:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
