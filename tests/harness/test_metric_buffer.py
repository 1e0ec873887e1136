"""The metric buffer on a real SQLite store and on a store that does not answer: batches, loses
nothing, sends beside training in order, and gives up only after the bounded wait."""

from __future__ import annotations

import math
import threading
import time

import pytest

from harness import retry, tracking
from harness.metric_buffer import MetricBuffer
from tests.helpers.mlflow_store import TrackingServer, fresh_store


@pytest.fixture
def store(tmp_path, migrated_db):
    """A fresh SQLite store, a client and an experiment."""
    c = tracking.client(fresh_store(migrated_db, tmp_path))
    return c, tracking.ensure_experiment(c, tracking.experiment_name("buffer"))


def mlflow_error(message, code):
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    return MlflowException(message, error_code=getattr(databricks_pb2, code))


class CountingClient:
    """The real client, counting log_batch round trips."""

    def __init__(self, client):
        self.client, self.calls = client, 0

    def log_batch(self, *args, **kwargs):
        self.calls += 1
        return self.client.log_batch(*args, **kwargs)


def test_metric_buffer_batches_and_loses_nothing(store):
    c, exp_id = store
    run_id = c.create_run(exp_id).info.run_id
    counting = CountingClient(c)
    buffer = MetricBuffer(counting, run_id, flush_every_s=3600, max_buffered=60)
    for step in range(1, 101):
        buffer.add({"loss": 1.0 / step, "loss_mask": float(step), "lr": 0.02}, step)
    buffer.flush()
    # one round trip per 60 metrics at most (the sender takes all that waits), not one per step
    assert 1 <= counting.calls <= math.ceil(300 / 60)
    for name, value in (("loss", lambda s: 1.0 / s), ("loss_mask", float), ("lr", lambda s: 0.02)):
        history = sorted(c.get_metric_history(run_id, name), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(1, 101))
        assert [m.value for m in history] == pytest.approx([value(s) for s in range(1, 101)])
    assert buffer.logged == 300


def test_metric_buffer_flushes_on_time_and_skips_logged_steps(store):
    c, exp_id = store
    run_id = c.create_run(exp_id).info.run_id
    buffer = MetricBuffer(c, run_id, flush_every_s=0.0, skip_until_step=2)
    for step in range(1, 5):
        buffer.add({"loss": float(step)}, step)
    # flush_every_s=0: every add is sent at once (no flush); steps 1-2 were dropped (already logged)
    deadline = time.monotonic() + 30
    while tracking.last_logged_step(c, run_id) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(m.step for m in c.get_metric_history(run_id, "loss")) == [3, 4]
    assert tracking.last_logged_step(c, run_id) == 4
    assert tracking.last_logged_step(c, c.create_run(exp_id).info.run_id) == -1


class DownClient:
    """A client whose store does not answer (connection refused) until `up` is set; records batches."""

    def __init__(self):
        self.up = threading.Event()
        self.batches: list[tuple[list, list]] = []

    def log_batch(self, run_id, metrics=(), tags=()):
        if not self.up.is_set():
            raise mlflow_error(
                "API request to http://127.0.0.1:1 failed: Connection refused", "INTERNAL_ERROR"
            )
        self.batches.append((list(metrics), list(tags)))


def test_metric_buffer_goes_on_while_the_store_is_down_and_sends_all_in_order_after(monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda s: threading.Event().wait(min(s, 0.05)))
    down = DownClient()
    buffer = MetricBuffer(down, "run", flush_every_s=0.0, wait_s=60)
    started = time.monotonic()
    for step in range(1, 201):  # each add asks for a send: none may wait for the store
        buffer.add({"loss": float(step), "lr": 0.1}, step)
        if step == 100:
            buffer.set_tags({"last_checkpoint_step": "100"})
    buffer.flush(wait_if_down=False)  # what a checkpoint does: it does not wait for a store that is down
    assert time.monotonic() - started < 5 and down.batches == []
    down.up.set()
    buffer.flush()
    sent = [m for metrics, _ in down.batches for m in metrics]
    assert [(m.key, m.step) for m in sent] == [(k, s) for s in range(1, 201) for k in ("loss", "lr")]
    assert [t.key for _, tags in down.batches for t in tags] == ["last_checkpoint_step"]
    assert buffer.logged == 400


def test_metric_buffer_gives_up_after_the_bounded_wait(monkeypatch):
    monkeypatch.setenv(retry.TRACKING_WAIT_ENV, "0.3")
    monkeypatch.setattr(tracking.time, "sleep", lambda s: threading.Event().wait(min(s, 0.05)))
    buffer = MetricBuffer(DownClient(), "run", flush_every_s=3600)
    buffer.add({"loss": 1.0}, 1)
    with pytest.raises(retry.StoreUnavailable, match=r"did not answer for 0 s.*SHAPEPROP_TRACKING_WAIT"):
        buffer.flush()
    with pytest.raises(retry.StoreUnavailable):  # and training stops at its next step
        buffer.add({"loss": 0.5}, 2)


@pytest.mark.slow  # about 30 s: an mlflow server on the session's PostgreSQL
def test_logging_costs_a_training_step_microseconds_against_a_postgresql_server(postgres_store, tmp_path):
    """What a training step pays for its metrics (7 of them, sent every step: the worst case), on the
    training thread, against a real server on PostgreSQL; the store round trip, paid by the sender."""
    from mlflow.entities import Metric

    metrics = {
        name: 0.5
        for name in (
            "loss",
            "loss_classifier",
            "loss_box_reg",
            "loss_mask",
            "loss_objectness",
            "loss_rpn_box_reg",
            "lr",
        )
    }
    with TrackingServer(tmp_path / "server", postgres_store) as server:
        c = tracking.client(server.url)
        exp = tracking.ensure_experiment(c, tracking.experiment_name("cost"))
        run_id = c.create_run(exp).info.run_id
        buffer = MetricBuffer(c, run_id, flush_every_s=0.0)
        costs = []
        for step in range(1, 501):
            started = time.perf_counter()
            buffer.add(metrics, step)
            costs.append(time.perf_counter() - started)
            time.sleep(0.01)  # a (very short) training step
        buffer.flush()
        assert len(c.get_metric_history(run_id, "loss")) == 500
        trips = []
        for step in range(501, 551):
            started = time.perf_counter()
            c.log_batch(run_id, metrics=[Metric(k, v, 0, step) for k, v in metrics.items()])
            trips.append(time.perf_counter() - started)
    mean, trip = sum(costs) / len(costs), sorted(trips)[len(trips) // 2]
    print(
        f"logging per training step: {mean * 1e6:.0f} us on the training thread; a log_batch round trip {trip * 1e3:.1f} ms"
    )
    assert mean < trip / 10  # the step does not wait for the store
