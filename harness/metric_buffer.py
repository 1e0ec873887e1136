"""Metrics of a training run sent to MLflow in batches, from a thread of their own: training never
waits for the store, and a store that does not answer for a while only delays them."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from harness.tracking import MAX_METRICS_PER_BATCH, MAX_TAGS_PER_BATCH, with_retry

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


class MetricBuffer:
    """Buffers (name, value, step) and sends them with `log_batch` from a thread of its own, every
    `flush_every_s` seconds, when `max_buffered` are waiting, and on `flush()`: one store round trip
    per many training steps, and training never waits for the store.

    A store that does not answer (a tracking server restarted, a network cut) only delays the
    sending: what is buffered meanwhile goes in order, steps unchanged, once it answers again. After
    `wait_s` seconds without an answer (default `$SHAPEPROP_TRACKING_WAIT`, 30 minutes) the next
    `add` or `flush` raises `StoreUnavailable`; `flush` waits for everything to be sent.
    `set_tags` sends tags the same way. Steps at or below `skip_until_step` are dropped: on resume
    they were logged before the kill.
    """

    def __init__(
        self,
        mlflow_client: MlflowClient,
        run_id: str,
        flush_every_s: float = 15.0,
        max_buffered: int = MAX_METRICS_PER_BATCH,
        skip_until_step: int = -1,
        wait_s: float | None = None,
    ):
        self.client = mlflow_client
        self.run_id = run_id
        self.flush_every_s = flush_every_s
        self.max_buffered = max_buffered
        self.skip_until_step = skip_until_step
        self.wait_s = wait_s
        self._pending: list[Any] = []
        self._tags: dict[str, str] = {}
        self._sending = False  # a batch is on its way (still in `_pending` until it arrived)
        self._wanted = False  # send what is pending now
        self._error: BaseException | None = None
        self._store_down = False  # the last send found the store not answering (retrying since)
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._last_flush = time.monotonic()
        self.logged = 0

    def add(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        self._raise_error()
        if step <= self.skip_until_step:
            return
        now = int(time.time() * 1000)
        with self._changed:
            self._pending.extend(Metric(k, float(v), now, int(step)) for k, v in metrics.items())
            due = len(self._pending) >= self.max_buffered
        if due or time.monotonic() - self._last_flush >= self.flush_every_s:
            self.send()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set tags of the run, sent like the metrics (the newest value of a tag wins)."""
        self._raise_error()
        with self._changed:
            self._tags.update({k: str(v)[:8000] for k, v in tags.items()})
        self.send()

    def send(self) -> None:
        """Start sending what is buffered, without waiting for it."""
        with self._changed:
            self._wanted = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._sender, name="metric-sender", daemon=True)
                self._thread.start()
            self._changed.notify_all()
        self._last_flush = time.monotonic()

    def flush(self, wait_if_down: bool = True) -> None:
        """Send everything buffered and wait until it is in the store (or raise why it cannot be).
        `wait_if_down=False`: stop waiting, and leave the rest to the sender, as soon as the store
        is found not answering (training then goes on)."""
        self.send()
        with self._changed:
            self._changed.wait_for(
                lambda: self._error is not None or self._idle() or (self._store_down and not wait_if_down)
            )
        self._raise_error()

    def _mark_down(self) -> None:
        with self._changed:
            self._store_down = True
            self._changed.notify_all()

    def _idle(self) -> bool:
        return not self._pending and not self._tags and not self._sending

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _sender(self) -> None:
        from mlflow.entities import RunTag

        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._wanted and (self._pending or self._tags))
                chunk = self._pending[:MAX_METRICS_PER_BATCH]
                tags = dict(list(self._tags.items())[:MAX_TAGS_PER_BATCH])
                self._sending = True
            batch = [RunTag(k, v) for k, v in tags.items()]
            try:
                with_retry(
                    lambda chunk=chunk, batch=batch: self.client.log_batch(
                        self.run_id, metrics=chunk, tags=batch
                    ),
                    "log metrics",
                    wait_s=self.wait_s,
                    on_unavailable=self._mark_down,
                )
            except BaseException as err:
                with self._changed:
                    self._error, self._sending = err, False
                    self._changed.notify_all()
                return
            with self._changed:
                del self._pending[: len(chunk)]
                for key, value in tags.items():
                    if self._tags.get(key) == value:
                        del self._tags[key]
                self.logged += len(chunk)
                self._sending = self._store_down = False
                if not self._pending and not self._tags:
                    self._wanted = False
                self._changed.notify_all()
