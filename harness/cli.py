"""The `shapeprop-bench` command line."""

from __future__ import annotations

import click

from shapeprop import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shapeprop-bench")
def main() -> None:
    """Reproduce and extend the ShapeProp paper's experiments.

    Suites (YAML) expand into runs that train and evaluate detectors with and without
    ShapeProp; every run is logged to MLflow, and reports render the paper's tables.
    """


@main.command()
def env() -> None:
    """Print versions of python, torch, CUDA, mlflow, detectron2 and the compiled operator."""
    from harness.environment import collect

    info = collect()
    width = max(map(len, info))
    for key, value in info.items():
        click.echo(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
