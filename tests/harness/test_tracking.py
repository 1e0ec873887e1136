"""MLflow tracking on a real SQLite store: URI resolution, batched metrics, what counts as finished,
which store errors are retried, how long a store that does not answer is waited for (metrics
buffered meanwhile, training never waiting), and finding or making a suite's experiment (deleted,
or raced)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import retry, run_tags, tracking
from harness.errors import UserError
from tests.helpers.mlflow_store import fresh_store


@pytest.fixture(scope="module")
def db_uri(tmp_path_factory):
    """One SQLite store for the module (creating one runs MLflow's migrations: seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"


@pytest.fixture
def store(db_uri, request):
    """The store, a client and an experiment of this test's own (suite name = test name)."""
    c = tracking.client(db_uri)
    suite = request.node.name.replace("[", "-").replace("]", "")
    exp_id = tracking.ensure_experiment(c, tracking.experiment_name(suite))
    return db_uri, c, exp_id, suite


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking.resolve_tracking_uri("sqlite:///sub/x.db") == f"sqlite:///{tmp_path}/sub/x.db"
    assert tracking.resolve_tracking_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.resolve_tracking_uri(None) == "http://127.0.0.1:5999"
    assert tracking.resolve_tracking_uri("sqlite:///y.db") == f"sqlite:///{tmp_path}/y.db"  # the flag wins


def test_reading_a_missing_store_does_not_create_it(tmp_path):
    uri = f"sqlite:///{tmp_path}/absent.db"
    assert tracking.key_states(uri, "unit") == {}
    assert not (tmp_path / "absent.db").exists()


def test_an_in_memory_store_has_no_database_file():
    assert tracking.sqlite_path("sqlite:///:memory:") is None
    assert tracking.sqlite_path("sqlite:////abs/x.db") == Path("/abs/x.db")
    assert tracking.store_exists("sqlite:///:memory:")


def test_ensure_experiment_is_idempotent(store):
    _, c, exp_id, suite = store
    assert tracking.ensure_experiment(c, f"shapeprop-bench/{suite}") == exp_id
    assert c.get_experiment(exp_id).name == f"shapeprop-bench/{suite}"


def test_a_sqlite_store_keeps_its_artifacts_beside_its_database(migrated_db, tmp_path, monkeypatch):
    """Not in the working directory (MLflow's default `./mlruns`): the store's folder holds its
    runs' files."""
    elsewhere = tmp_path / "working-directory"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    c = tracking.client(fresh_store(migrated_db, tmp_path / "store"))
    exp_id = tracking.ensure_experiment(c, tracking.experiment_name("artifacts"))
    run_id = c.create_run(exp_id).info.run_id
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    c.log_artifact(run_id, str(tmp_path / "table.csv"))

    stored = tmp_path / "store/mlartifacts/shapeprop-bench/artifacts" / run_id / "artifacts/table.csv"
    assert stored.read_text() == "a,b\n1,2\n"
    assert list(elsewhere.iterdir()) == []


def test_key_states_finished_wins_else_the_newest_run(store):
    uri, c, exp_id, suite = store

    def run(key, status, start, kind="run"):
        r = c.create_run(exp_id, start_time=start, tags={"kind": kind, "run_key": key})
        if status != "RUNNING":
            c.set_terminated(r.info.run_id, status=status)
        return r.info.run_id

    run("a", "FAILED", 1000)
    finished = run("a", "FINISHED", 2000)
    run("a", "RUNNING", 3000)  # a newer attempt does not un-finish a key
    run("b", "FAILED", 1000)
    running = run("b", "RUNNING", 2000)
    run("c", "RUNNING", 1000)
    failed = run("c", "KILLED", 2000)
    run("d", "FINISHED", 1000, kind="invocation")  # parent runs are not run specs

    states = tracking.key_states(uri, suite)
    assert states["a"] == tracking.KeyState("finished", finished, "FINISHED")
    assert states["b"] == tracking.KeyState("running", running, "RUNNING")
    assert states["c"] == tracking.KeyState("failed", failed, "KILLED")
    assert "d" not in states
    assert set(tracking.key_states(uri, suite, keys=["a"])) == {"a"}
    # the direct SQLite read (fast planning) sees exactly what the MLflow client sees
    name = tracking.experiment_name(suite)
    direct = tracking._child_runs_sqlite(uri, name)
    assert direct is not None and len(direct) == 7
    assert direct == tracking._child_runs_client(uri, name)
    c.delete_run(finished)
    assert tracking._child_runs_sqlite(uri, name) == tracking._child_runs_client(uri, name)
    assert tracking.key_states(uri, suite)["a"].state == "running"  # a deleted run does not count
    assert tracking.key_states(uri, "other-suite") == {}


def test_environment_tags_name_versions_device_and_git():
    tags = run_tags.environment_tags()
    for key in ("version.torch", "version.mlflow", "version.python", "device", "git_commit", "git_dirty"):
        assert tags[key], key
    assert tags["git_dirty"] in ("true", "false", "unknown")


def failing(errors, result="ok"):
    """A call that raises `errors` one by one, then returns `result`; counts its calls."""
    errors = list(errors)

    def call():
        call.count += 1
        if errors:
            raise errors.pop(0)
        return result

    call.count = 0
    return call


@pytest.fixture
def sleeps(monkeypatch):
    """The delays `with_retry` waits, recorded instead of slept."""
    waited = []
    monkeypatch.setattr(tracking.time, "sleep", waited.append)
    return waited


def mlflow_error(message, code):
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    return MlflowException(message, error_code=getattr(databricks_pb2, code))


@pytest.mark.parametrize(
    "error",
    [
        # the message alone makes these two transient, whatever their code
        lambda: mlflow_error("(sqlite3.OperationalError) database is locked", "BAD_REQUEST"),
        lambda: mlflow_error("the store is busy", "BAD_REQUEST"),
        # and the code alone these two
        lambda: mlflow_error("503 from the tracking server", "TEMPORARILY_UNAVAILABLE"),
        lambda: mlflow_error("API request failed: connection reset", "INTERNAL_ERROR"),
        lambda: ConnectionResetError(104, "Connection reset by peer"),
    ],
    ids=["locked-message", "busy-message", "unavailable-code", "internal-code", "oserror"],
)
def test_with_retry_retries_transient_errors(error, sleeps):
    call = failing([error(), error()])
    assert tracking.with_retry(call, "log", attempts=3, delay_s=0.5) == "ok"
    assert call.count == 3
    assert sleeps == [0.5, 1.0]  # a longer wait after each failure


@pytest.mark.parametrize(
    "error",
    [
        lambda: mlflow_error("Run 'abc' not found", "RESOURCE_DOES_NOT_EXIST"),
        lambda: mlflow_error("Changing param values is not allowed", "INVALID_PARAMETER_VALUE"),
        lambda: ValueError("not a store error"),
        lambda: FileNotFoundError(2, "No such file or directory", "runs/x/metrics.json"),
        lambda: PermissionError(13, "Permission denied", "mlruns/1"),
    ],
    ids=["missing-run", "invalid-param", "not-mlflow", "missing-file", "permission"],
)
def test_with_retry_raises_other_errors_at_once(error, sleeps):
    raised = error()
    call = failing([raised])
    with pytest.raises(type(raised)) as info:
        tracking.with_retry(call, "log", attempts=3)
    assert info.value is raised
    assert call.count == 1 and sleeps == []


def test_with_retry_raises_the_last_error_after_the_last_attempt(sleeps):
    errors = [mlflow_error(f"database is locked ({i})", "INTERNAL_ERROR") for i in range(4)]
    call = failing(errors)
    with pytest.raises(type(errors[0])) as info:
        tracking.with_retry(call, "log", attempts=3, delay_s=0.5)
    assert info.value is errors[2]  # the third attempt's error, as raised
    assert call.count == 3 and sleeps == [0.5, 1.0]


def test_ensure_experiment_restores_a_deleted_experiment(store):
    uri, c, exp_id, suite = store
    c.delete_experiment(exp_id)
    assert c.get_experiment(exp_id).lifecycle_stage == "deleted"
    assert tracking.ensure_experiment(c, tracking.experiment_name(suite)) == exp_id
    assert c.get_experiment(exp_id).lifecycle_stage == "active"
    c.create_run(exp_id)  # runs can be logged into it again


class RacingClient:
    """The real client, except that another process creates the experiment just before this one
    does (between its lookup and its create); `create_raises` instead fails without creating."""

    def __init__(self, uri, create_raises=None):
        self.client, self.other = tracking.client(uri), tracking.client(uri)
        self.create_raises, self.other_id, self.creates = create_raises, None, 0

    def __getattr__(self, name):
        return getattr(self.client, name)

    def create_experiment(self, name, **kwargs):
        self.creates += 1
        if self.create_raises is not None:
            raise self.create_raises
        self.other_id = self.other.create_experiment(name)  # an older harness: no kind tag
        return self.client.create_experiment(name, **kwargs)


def test_ensure_experiment_returns_the_one_another_process_created_meanwhile(db_uri):
    racing = RacingClient(db_uri)
    name = tracking.experiment_name("raced")
    assert tracking.ensure_experiment(racing, name) == racing.other_id
    assert racing.creates == 1  # our create failed: the name was taken
    experiment = racing.client.get_experiment(racing.other_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_ensure_experiment_raises_when_create_fails_and_nobody_created_it(db_uri):
    error = mlflow_error("Invalid experiment name", "INVALID_PARAMETER_VALUE")
    racing = RacingClient(db_uri, create_raises=error)
    with pytest.raises(type(error)) as info:
        tracking.ensure_experiment(racing, tracking.experiment_name("never-created"))
    assert info.value is error
    assert racing.client.get_experiment_by_name(tracking.experiment_name("never-created")) is None


def test_with_retry_waits_for_a_store_that_does_not_answer_beyond_its_attempts(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(tracking.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(tracking.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    refused = [ConnectionRefusedError(111, "Connection refused") for _ in range(40)]
    call = failing(refused)
    assert tracking.with_retry(call, "log", attempts=3, delay_s=1.0, wait_s=1000) == "ok"
    assert call.count == 41 and clock[0] == sum(range(1, 31)) + 10 * 30  # waits grow to 30 s

    call = failing([ConnectionRefusedError(111, "Connection refused") for _ in range(1000)])
    clock[0] = 0.0
    with pytest.raises(retry.StoreUnavailable, match="log: the tracking store did not answer for 60 s"):
        tracking.with_retry(call, "log", attempts=3, wait_s=60)
    assert 60 <= clock[0] < 100


def test_tracking_wait_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv(retry.TRACKING_WAIT_ENV, raising=False)
    assert retry.tracking_wait_s() == 1800
    monkeypatch.setenv(retry.TRACKING_WAIT_ENV, "90")
    assert retry.tracking_wait_s() == 90
    monkeypatch.setenv(retry.TRACKING_WAIT_ENV, "soon")
    with pytest.raises(UserError, match="SHAPEPROP_TRACKING_WAIT='soon'"):
        retry.tracking_wait_s()
