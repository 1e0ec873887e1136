"""`shapeprop-bench ui` (the MLflow UI on the tracking store) and `env` (versions)."""

from __future__ import annotations

import os
import signal
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


class _Stopped(Exception):
    """A signal asked `ui` to stop."""


def _stop_on_signal(signum: int, frame: object) -> None:
    raise _Stopped(signum)


@click.command()
@tracking_uri_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on; the default lets only this machine in (0.0.0.0: every interface).",
)
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Server processes.")
def ui(tracking_uri: str | None, host: str, port: int, workers: int) -> None:
    """Start `mlflow ui` on the tracking store and print its URL.

    It listens on this machine only unless --host says otherwise. Stopped by Ctrl-C or any
    terminating signal (SIGTERM, SIGHUP), it stops the server and its workers with it.
    """
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
        "--workers",
        str(workers),
    ]
    # In a process group of its own, so that stopping it stops its workers too, whatever stops `ui`.
    process = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    # SIGINT too: a shell starts a background job with SIGINT ignored, and Python then leaves it so
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _stop_on_signal)
    # MLflow 3's UI opens experiments on its GenAI pages unless told the workflow is model training
    url = f"http://{host}:{port}/#/experiments?workflowType=machine_learning"
    click.echo(f"MLflow UI for {uri} at {url}  (Ctrl-C to stop)", err=False)
    if host in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"Listening on {host} only: nobody else can reach it (--host 0.0.0.0 to share it).")
    else:
        click.echo(
            f"Listening on {host}: anyone who reaches port {port} can read and change this store "
            "(no login; the README shows a shared server with MLflow's basic authentication)."
        )
    sys.stdout.flush()
    try:
        code = process.wait()
    except (KeyboardInterrupt, _Stopped):
        _stop_group(process)
        code = 0
    sys.exit(code)


def _stop_group(process: subprocess.Popen) -> None:
    """Terminate the server's process group; after 15 s, or once the server is gone, kill what is
    left of the group (a worker that did not stop would hold the port)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
