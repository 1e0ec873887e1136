"""Retries of transient tracking-store errors (SQLite 'database is locked', HTTP hiccups), and the
bounded wait for a store that does not answer at all (a tracking server restarted, a network cut)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from harness.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")

PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
# How long a run waits for a tracking store that does not answer before it fails (its training goes
# on meanwhile, its metrics buffered): long enough for a server's restart or a network cut.
TRACKING_WAIT_ENV = "SHAPEPROP_TRACKING_WAIT"
DEFAULT_TRACKING_WAIT_S = 1800.0
# Signs, in an error's text, of a store that did not answer at all (requests/urllib3 via MLflow's
# REST client, or the database driver), as opposed to one that answered with an error.
UNAVAILABLE_SIGNS = (
    "Max retries exceeded",
    "Connection refused",
    "Failed to establish a new connection",
    "Connection aborted",
    "Connection reset",
    "RemoteDisconnected",
    "Read timed out",
    "could not connect to server",
    "connection failed",
    "server closed the connection",
)


class StoreUnavailable(UserError):
    """The tracking store did not answer within `SHAPEPROP_TRACKING_WAIT` seconds."""


def tracking_wait_s() -> float:
    """Seconds to wait for a store that does not answer: `$SHAPEPROP_TRACKING_WAIT`, else 30 minutes."""
    value = os.environ.get(TRACKING_WAIT_ENV, "")
    if not value:
        return DEFAULT_TRACKING_WAIT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise UserError(f"{TRACKING_WAIT_ENV}={value!r}: not a number of seconds (e.g. 1800)")
    return seconds


def with_retry(
    fn: Callable[[], T],
    what: str,
    attempts: int = 5,
    delay_s: float = 0.5,
    wait_s: float | None = None,
    on_unavailable: Callable[[], None] | None = None,
) -> T:
    """Call `fn`, retrying transient store errors (SQLite 'database is locked', HTTP hiccups) up to
    `attempts` calls in all, waiting `delay_s` times the attempt's number after each failure (30 s
    at most); any other error, and the last attempt's, is raised as it is.

    A store that does not answer at all (connection refused, reset, timed out) is tried again for
    `wait_s` seconds (default `tracking_wait_s()`) however many attempts that takes; then
    `StoreUnavailable` is raised, naming the wait and how to change it. `on_unavailable()` is
    called after each such failure (e.g. to stop waiting for this call elsewhere)."""
    from tenacity import Retrying, retry_if_exception, wait_incrementing

    wait_s = tracking_wait_s() if wait_s is None else wait_s
    started = time.monotonic()

    def stop(state: Any) -> bool:
        if unavailable(state.outcome.exception()):
            return time.monotonic() - started >= wait_s
        return state.attempt_number >= attempts

    def warn(state: Any) -> None:
        err = state.outcome.exception()
        if unavailable(err):
            if on_unavailable is not None:
                on_unavailable()
            log.warning(
                "%s: the tracking store does not answer (%s); trying again for up to %.0f s (%s)",
                what, err, wait_s, TRACKING_WAIT_ENV,
            )  # fmt: skip
        else:
            log.warning("%s failed (%s), retry %d/%d", what, err, state.attempt_number, attempts - 1)

    retrying = Retrying(
        retry=retry_if_exception(_transient),
        stop=stop,
        wait=wait_incrementing(start=delay_s, increment=delay_s, max=30),
        sleep=time.sleep,
        before_sleep=warn,
        reraise=True,
    )
    try:
        return retrying(fn)
    except Exception as err:
        if unavailable(err):
            raise StoreUnavailable(
                f"{what}: the tracking store did not answer for {wait_s:.0f} s ({err}); "
                f"start it again, or wait longer: {TRACKING_WAIT_ENV}=<seconds> (now {wait_s:.0f})"
            ) from err
        raise


def unavailable(err: BaseException | None) -> bool:
    """An error of a store that did not answer at all (as opposed to one that answered an error)."""
    if isinstance(err, ConnectionError | TimeoutError):
        return True
    from mlflow.exceptions import MlflowException

    if not isinstance(err, MlflowException | OSError):
        return False
    if getattr(err, "error_code", "") == "TEMPORARILY_UNAVAILABLE":
        return True
    text = str(err)
    return any(sign.lower() in text.lower() for sign in UNAVAILABLE_SIGNS)


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
