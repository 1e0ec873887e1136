"""The `shapeprop-bench` command line: a thin layer of click commands over the harness library.

Each command lives in its own module and is imported only when used, so the CLI starts fast
(`plan` and `status` import neither torch nor MLflow's tracking server code):

    options.py  the options and arguments the commands share
    run.py      run (a suite, inline, in local processes or on Slurm)
    inspect.py  plan, status
    report.py   report (the paper's tables and figures)
    show.py     show (qualitative figures of runs)
    predict.py  predict (a run's model on new images)
    data.py     data generate / stats / verify
    ui.py       ui (the MLflow UI), env
    archive.py  archive export / import (finished runs to a committable file and back)
"""

from __future__ import annotations

import importlib

import click

from shapeprop import __version__

# command name -> (module, attribute); imported on first use
COMMANDS = {
    "archive": ("harness.cli.archive", "archive"),
    "data": ("harness.cli.data", "data"),
    "env": ("harness.cli.ui", "env"),
    "plan": ("harness.cli.inspect", "plan"),
    "predict": ("harness.cli.predict", "predict"),
    "report": ("harness.cli.report", "report"),
    "run": ("harness.cli.run", "run"),
    "show": ("harness.cli.show", "show"),
    "status": ("harness.cli.inspect", "status"),
    "ui": ("harness.cli.ui", "ui"),
}


class _LazyGroup(click.Group):
    """A click group whose commands are imported when they are used (or listed by --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr = COMMANDS[cmd_name]
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context) -> object:
        """Run the command; the harness's errors for the user become click's (message, exit 1)."""
        from harness.errors import OptionError, UserError

        try:
            return super().invoke(ctx)
        except OptionError as err:
            raise click.BadParameter(str(err), param_hint=err.option) from None
        except UserError as err:
            raise click.ClickException(str(err)) from None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shapeprop-bench")
@click.option(
    "--plugin",
    "plugin_names",
    multiple=True,
    metavar="MODULE|FILE.py",
    help="a plugin to load first: a module (or .py file) that registers datasets, methods, detectors "
    "or backbones (repeatable; installed plugins of the entry-point group shapeprop_bench.plugins "
    "load anyway)",
)
def main(plugin_names: tuple[str, ...]) -> None:
    """Reproduce and extend the ShapeProp paper's experiments.

    Suites (YAML) expand into runs that train and evaluate detectors with and without
    ShapeProp; every run is logged to MLflow, and reports render the paper's tables.
    """
    from harness import plugins

    try:
        plugins.load_all()
        for name in plugin_names:
            plugins.load(name)
    except plugins.PluginError as err:
        raise click.UsageError(str(err)) from None
