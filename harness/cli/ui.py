"""`shapeprop-bench ui` (the MLflow UI on the tracking store) and `env` (versions)."""

from __future__ import annotations

import os
import subprocess
import sys

import click

from harness.cli.options import tracking_uri_option


@click.command()
def env() -> None:
    """Print versions of python, torch, CUDA, mlflow, detectron2 and the compiled operator."""
    from harness.environment import collect

    info = collect()
    width = max(map(len, info))
    for key, value in info.items():
        click.echo(f"{key:<{width}}  {value}")


@click.command()
@tracking_uri_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Server processes.")
def ui(tracking_uri: str | None, host: str, port: int, workers: int) -> None:
    """Start `mlflow ui` on the tracking store and print its URL (Ctrl-C stops it)."""
    from harness import tracking

    uri = tracking.resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        click.echo(f"The tracking server serves its own UI: {uri}")
        return
    if not tracking.store_exists(uri):
        raise click.ClickException(
            f"no MLflow store at {uri} yet: run a suite first (or pass --tracking-uri)"
        )
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    # MLflow 3's UI opens experiments on its GenAI pages unless told the workflow is model training
    url = f"http://{host}:{port}/#/experiments?workflowType=machine_learning"
    click.echo(f"MLflow UI for {uri} at {url}  (Ctrl-C to stop)", err=False)
    sys.stdout.flush()
    try:
        sys.exit(process.wait())
    except KeyboardInterrupt:
        process.terminate()
        process.wait(10)
