"""What a `run` shows on the terminal: one bar for the suite, one for each run in progress, and
nothing else unless asked (`--verbose`); each run's log file keeps everything.

Lightning and MLflow attach their own console handlers to their loggers (and stop them from
propagating); `quiet_console` takes those handlers off and lets the records propagate to the root
logger, where the runner's per-run file handler writes them. Python warnings go the same way.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

# loggers of our dependencies that print to the console on their own
NOISY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "mlflow", "alembic", "py.warnings")


@contextlib.contextmanager
def quiet_console() -> Iterator[None]:
    """Route our dependencies' log records and Python warnings to the root logger's handlers (the
    run's log file) instead of the console, for the duration of the block."""
    # Both install their console handlers when imported: import them first, then take those off.
    import lightning.pytorch  # noqa: F401
    import mlflow  # noqa: F401

    saved: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        consoles = [
            h
            for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
        ]
        saved.append((logger, consoles, logger.propagate))
        for handler in consoles:
            logger.removeHandler(handler)
        logger.propagate = True
    root = logging.getLogger()
    sink = logging.NullHandler()  # without any handler, logging prints warnings to stderr itself
    root.addHandler(sink)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.removeHandler(sink)
        for logger, consoles, propagate in saved:
            for handler in consoles:
                logger.addHandler(handler)
            logger.propagate = propagate


class SuiteProgress:
    """A rich display of the suite's runs (done / to do, the row last started) and a bar of training
    steps for each run in progress (loss, steps/s, time left): one inline, up to `--workers` with
    the local executor, whose workers report through `harness.executors.local`."""

    def __init__(self, console: Any, title: str, total_runs: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
        )
        self.suite = self.progress.add_task(title, total=total_runs, info="")
        self.runs: dict[str, Any] = {}  # run key -> its bar
        self.started = False

    def start(self, total_runs: int) -> None:
        """Show the bars (not before: checks that fail first print their message alone)."""
        self.progress.update(self.suite, total=total_runs)
        self.progress.start()
        self.started = True

    def __enter__(self) -> SuiteProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.started:
            self.progress.stop()

    def run_started(self, key: str, label: str, max_steps: int, start_step: int) -> None:
        from rich.markup import escape

        self.progress.update(self.suite, info=escape(label))
        self._remove(key)  # a run that starts again (resumed in the same invocation)
        resumed = f" (resumed at {start_step})" if start_step else ""
        self.runs[key] = self.progress.add_task(
            f"  {escape(label)}{resumed}", total=max_steps, completed=start_step, info=""
        )

    def step(self, key: str, step: int, loss: float | None) -> None:
        if key not in self.runs:
            return
        task = next(t for t in self.progress.tasks if t.id == self.runs[key])
        speed = f"{task.speed:.2f} steps/s" if task.speed else ""
        info = "  ".join(x for x in (f"loss {loss:.3f}" if loss is not None else "", speed) if x)
        self.progress.update(self.runs[key], completed=step, info=info)

    def run_ended(self, key: str, line: str) -> None:
        """Run `key` ended: print `line` above the bars and advance the suite's bar."""
        self._remove(key)
        self.progress.console.print(line)
        self.progress.advance(self.suite)

    def _remove(self, key: str) -> None:
        if key in self.runs:
            self.progress.remove_task(self.runs.pop(key))
