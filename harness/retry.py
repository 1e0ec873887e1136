"""Retries of transient tracking-store errors (SQLite 'database is locked', HTTP hiccups)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def with_retry(fn: Callable[[], T], what: str, attempts: int = 5, delay_s: float = 0.5) -> T:
    """Call `fn`, retrying transient store errors (SQLite 'database is locked', HTTP hiccups) up to
    `attempts` calls in all, waiting `delay_s` times the attempt's number after each failure; any
    other error, and the last attempt's, is raised as it is."""
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_incrementing

    def warn(state: Any) -> None:
        err = state.outcome.exception()
        log.warning("%s failed (%s), retry %d/%d", what, err, state.attempt_number, attempts - 1)

    retrying = Retrying(
        retry=retry_if_exception(_transient),
        stop=stop_after_attempt(attempts),
        wait=wait_incrementing(start=delay_s, increment=delay_s),
        sleep=time.sleep,
        before_sleep=warn,
        reraise=True,
    )
    return retrying(fn)


def _transient(err: BaseException) -> bool:
    """A store error that a retry may mend."""
    from mlflow.exceptions import MlflowException

    if not isinstance(err, (MlflowException, OSError)):
        return False
    # OSError: a network or shared file system's hiccup, but not a path that is missing or
    # unreadable, which no retry mends
    if "locked" in str(err) or "busy" in str(err):
        return True
    if isinstance(err, OSError) and not isinstance(err, PERMANENT_OS_ERRORS):
        return True
    return getattr(err, "error_code", "") in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR")
