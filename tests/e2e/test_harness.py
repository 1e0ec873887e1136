"""The harness end to end: the real CLI runs the real experiment function on tiny synthetic configs.

Covered: inline and local executors on a real SQLite store, submitit's local executor, three
workers at once against a real `mlflow server` on loopback (no metric lost), skip-if-finished
on a second invocation, a failing run recorded FAILED while the suite goes on, and a run killed
with SIGKILL that resumes into the same MLflow run with the same final metrics.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import tracking
from harness.run_tags import flatten_config
from harness.suite import expand, load_suite
from tests.helpers import TEST_SUITES
from tests.helpers.cli import cli, cli_exe
from tests.helpers.mlflow_store import TrackingServer, free_port, fresh_store, wait_until_answering

SUITE = TEST_SUITES / "tiny.yaml"
SUITE_NAME = "test-tiny"
AP_METRICS = [f"{kind}_{m}" for kind in ("segm", "bbox") for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
CONTRACT_TAGS = (
    "suite",
    "reproduces",
    "row",
    "method",
    "seed",
    "run_key",
    "profile",
    "git_commit",
    "git_dirty",
    "device",
    "dataset_fingerprint",
    "version.torch",
    "version.mlflow",
    "mlflow.parentRunId",
)


def specs(profile: str = "full") -> dict[str, object]:
    return {s.row: s for s in expand(load_suite(SUITE), profile)}


def child_runs(uri: str) -> list:
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(tracking.experiment_name(SUITE_NAME))
    return c.search_runs([exp.experiment_id], filter_string="tags.kind = 'run'")


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def check_finished_run(uri: str, run, spec, runs_dir: Path, log_every_steps: bool) -> None:
    """A FINISHED child run as the contract says: tags, params, metrics with steps, artifacts."""
    c = tracking.client(uri)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    for key in CONTRACT_TAGS:
        assert tags.get(key), f"tag {key} missing"
    assert (tags["kind"], tags["row"], tags["method"], tags["run_key"]) == (
        "run",
        spec.row,
        spec.method,
        spec.key,
    )
    assert (tags["seed"], tags["profile"], tags["suite"]) == (str(spec.seed), spec.profile, SUITE_NAME)
    assert run.data.params == flatten_config(spec.config)

    workdir = runs_dir / SUITE_NAME / spec.key
    evaluation = json.loads((workdir / "evaluation.json").read_text())
    for name in AP_METRICS + ["train_s_per_step", "infer_s_per_img"]:
        assert same(run.data.metrics[name], evaluation["metrics"][name]), name
    training = [m for m in run.data.metrics if m == "lr" or m.startswith("loss")]
    assert "loss" in training and "lr" in training and len(training) > 3
    max_steps = spec.config.schedule.max_steps
    for name in training:  # every training metric at every logged step, once
        steps = sorted(m.step for m in c.get_metric_history(run.info.run_id, name))
        assert steps == (list(range(1, max_steps + 1)) if log_every_steps else [max_steps]), name
    artifacts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "evaluation.json", "run.log"} <= artifacts
    assert [o.step for o in run.outputs.model_outputs] == [max_steps]  # its model, runs:/<id>/model
    assert json.loads((workdir / "mlflow.json").read_text())["run_id"] == run.info.run_id


@pytest.fixture(scope="module")
def inline_store(tmp_path_factory, migrated_db):
    """One inline invocation: `baseline` trains for real, `broken` fails (no such dataset root)."""
    root = tmp_path_factory.mktemp("inline")
    uri = fresh_store(migrated_db, root)
    # --no-preflight: the broken run must start and fail, to be recorded FAILED (test_preflight.py
    # checks that without the flag nothing starts)
    args = (
        "run",
        str(SUITE),
        "--only",
        "baseline",
        "--only",
        "broken",
        "--tracking-uri",
        uri,
        "--no-preflight",
    )
    out = cli(*args, "--runs-dir", str(root / "runs"), "--log-every", "1", cwd=root)
    return root, uri, out


def test_inline_run_records_finished_and_failed_runs(inline_store):
    root, uri, out = inline_store
    assert out.returncode == 1, out.stdout + out.stderr  # one run failed
    assert "done 1, skipped 0, failed 1" in out.stdout
    assert "FAILED broken" in out.stdout and "/nonexistent/coco" in out.stdout

    runs = {r.data.tags["row"]: r for r in child_runs(uri)}
    assert set(runs) == {"baseline", "broken"}
    check_finished_run(uri, runs["baseline"], specs()["baseline"], root / "runs", log_every_steps=True)

    broken = runs["broken"]
    assert broken.info.status == "FAILED"
    assert "/nonexistent/coco" in broken.data.tags["error"]
    c = tracking.client(uri)
    trace = Path(c.download_artifacts(broken.info.run_id, "traceback.txt", str(root))).read_text()
    assert "Traceback" in trace and "/nonexistent/coco" in trace

    parent_id = runs["baseline"].data.tags["mlflow.parentRunId"]
    assert broken.data.tags["mlflow.parentRunId"] == parent_id
    parent = c.get_run(parent_id)
    assert parent.data.tags["kind"] == "invocation" and parent.info.status == "FAILED"
    assert parent.data.metrics == {"runs_done": 1.0, "runs_failed": 1.0, "runs_skipped": 0.0}


def test_second_invocation_skips_finished_runs(inline_store):
    root, uri, _ = inline_store
    out = cli(
        "run",
        str(SUITE),
        "--only",
        "baseline",
        "--tracking-uri",
        uri,
        "--runs-dir",
        str(root / "runs"),
        cwd=root,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 to run" not in out.stdout and "0 to run, 1 already finished" in out.stdout
    assert "done 0, skipped 1, failed 0" in out.stdout
    assert [r.data.tags["row"] for r in child_runs(uri)].count("baseline") == 1  # no new run

    plan = cli("plan", str(SUITE), "--tracking-uri", uri, "--runs-dir", str(root / "runs"), cwd=root)
    assert plan.returncode == 0, plan.stderr
    lines = {line.split("│")[4].strip(): line for line in plan.stdout.splitlines() if line.count("│") > 5}
    assert "skip" in lines["baseline"] and "finished" in lines["baseline"]
    assert "resume" in lines["broken"] and "failed" in lines["broken"]  # its work dir holds its MLflow run
    assert "run" in lines["second seed"] and "missing" in lines["second seed"]
    assert "3 of 4 runs would execute" in plan.stdout

    status = cli("status", str(SUITE), "--tracking-uri", uri, "--runs", cwd=root)
    assert status.returncode == 0, status.stderr
    summary, listing = status.stdout.split("└", 1)  # the per-row table, then one line per run
    rows = {line.split("│")[1].strip(): line.split("│")[3:7] for line in summary.splitlines() if "│" in line}
    assert [x.strip() for x in rows["baseline"]] == ["1", "0", "0", "0"]
    assert [x.strip() for x in rows["broken"]] == ["0", "0", "1", "0"]
    assert [x.strip() for x in rows["total"]] == ["1", "0", "1", "2"]
    (broken_line,) = [line for line in listing.splitlines() if "│ broken" in line and "failed" in line]
    assert "nonexistent" in broken_line


def kill_then_resume(directory: Path, uri: str, profile: str, reference_uri: str) -> None:
    """Start `run`, SIGKILL it at its first checkpoint, start it again: the run must resume into the
    same MLflow run and end with the metrics of the uninterrupted run in `reference_uri`."""
    spec = specs(profile)["baseline"]
    command = [
        cli_exe(),
        "run",
        str(SUITE),
        "--profile",
        profile,
        "--only",
        "baseline",
        "--tracking-uri",
        uri,
    ]
    command += ["--runs-dir", str(directory / "runs"), "--log-every", "1"]
    checkpoints = directory / "runs" / SUITE_NAME / spec.key / "checkpoints"

    process = subprocess.Popen(command, cwd=directory, start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    while not (checkpoints / "last.ckpt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert (checkpoints / "last.ckpt").exists(), "the run ended before its first checkpoint"
    (killed,) = child_runs(uri)
    assert killed.info.status == "RUNNING"  # SIGKILL left it unfinished

    out = subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    (resumed,) = child_runs(uri)
    assert resumed.info.run_id == killed.info.run_id
    assert 0 < int(resumed.data.tags["resumed_from_step"]) < spec.config.schedule.max_steps
    check_finished_run(uri, resumed, spec, directory / "runs", log_every_steps=True)

    (reference,) = [r for r in child_runs(reference_uri) if r.data.tags["run_key"] == spec.key]
    ref_loss = tracking.client(reference_uri).get_metric_history(reference.info.run_id, "loss")
    loss = tracking.client(uri).get_metric_history(resumed.info.run_id, "loss")
    assert {m.step: m.value for m in loss} == pytest.approx({m.step: m.value for m in ref_loss})
    for name in AP_METRICS:
        assert same(resumed.data.metrics[name], reference.data.metrics[name]), name


def test_kill_and_resume_into_the_same_run(inline_store, tmp_path, migrated_db):
    """SIGKILL mid-training, the same command again: same MLflow run, same final metrics."""
    _, reference_uri, _ = inline_store
    kill_then_resume(tmp_path, fresh_store(migrated_db, tmp_path), "full", reference_uri)


@pytest.mark.slow
def test_kill_and_resume_across_a_pass_over_the_data(tmp_path, migrated_db):
    """As above, with a resume that runs into the second pass over the 8 training images (this
    caught batches replayed after a mid-pass resume, fixed in shapeprop/engine 689d2a1)."""
    reference = tmp_path / "reference"
    reference.mkdir()
    reference_uri = fresh_store(migrated_db, reference)
    out = cli("run", str(SUITE), "--profile", "long", "--only", "baseline", "--tracking-uri", reference_uri,
              "--runs-dir", str(reference / "runs"), "--log-every", "1", cwd=reference)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    kill_then_resume(tmp_path, fresh_store(migrated_db, tmp_path), "long", reference_uri)


def test_local_executor_two_workers(tmp_path, migrated_db):
    uri = fresh_store(migrated_db, tmp_path)
    out = cli(
        "run", str(SUITE), "--profile", "mini", "--only", "second", "--only", "third",
        "--executor", "local", "--workers", "2", "--tracking-uri", uri, "--runs-dir", str(tmp_path / "runs"),
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "done 2, skipped 0, failed 0" in out.stdout
    mini = specs("mini")
    runs = {r.data.tags["row"]: r for r in child_runs(uri)}
    assert set(runs) == {"second seed", "third seed"}
    for row, run in runs.items():
        check_finished_run(uri, run, mini[row], tmp_path / "runs", log_every_steps=False)
        assert run.data.tags["mlflow.parentRunId"] == runs["second seed"].data.tags["mlflow.parentRunId"]
        assert (tmp_path / "runs" / SUITE_NAME / mini[row].key / "run.log").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_executor_through_submitit_local(tmp_path, migrated_db):
    uri = fresh_store(migrated_db, tmp_path)
    out = cli(
        "run", str(SUITE), "--profile", "mini", "--only", "baseline", "--executor", "slurm",
        "--slurm-cluster", "local", "--tracking-uri", uri, "--runs-dir", str(tmp_path / "runs"),
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    (run,) = child_runs(uri)
    check_finished_run(uri, run, specs("mini")["baseline"], tmp_path / "runs", log_every_steps=False)
    assert list((tmp_path / "runs" / SUITE_NAME / "submitit").rglob("*_result.pkl"))  # went through submitit


@pytest.fixture(params=["sqlite", "postgresql"])
def mlflow_server(request, tmp_path, migrated_db):
    """A real `mlflow server` on loopback serving the artifacts, over SQLite or over a real
    PostgreSQL (the session's throw-away cluster); always stopped."""
    if request.param == "sqlite":
        backend = fresh_store(migrated_db, tmp_path / "server")
    else:
        backend = request.getfixturevalue("postgres_store")
    with TrackingServer(tmp_path / "server", backend) as server:
        yield server.url


@pytest.mark.slow  # 100 s: three runs at once on 2 cores beside an MLflow server
def test_three_workers_against_a_tracking_server_lose_no_metric(mlflow_server, tmp_path):
    out = cli(
        "run", str(SUITE), "--profile", "mini", "--only", "baseline", "--only", "second", "--only", "third",
        "--executor", "local", "--workers", "3", "--log-every", "1", "--tracking-uri", mlflow_server,
        "--runs-dir", str(tmp_path / "runs"),
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "done 3, skipped 0, failed 0" in out.stdout
    mini = specs("mini")
    runs = {r.data.tags["row"]: r for r in child_runs(mlflow_server)}
    assert set(runs) == {"baseline", "second seed", "third seed"}
    for row, run in runs.items():
        check_finished_run(mlflow_server, run, mini[row], tmp_path / "runs", log_every_steps=True)
    names = {row: sorted(run.data.metrics) for row, run in runs.items()}
    assert names["baseline"] == names["second seed"] == names["third seed"]

    again = cli("run", str(SUITE), "--profile", "mini", "--only", "baseline", "--tracking-uri", mlflow_server,
                "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0 and "done 0, skipped 1, failed 0" in again.stdout, (
        again.stdout + again.stderr
    )


def test_dry_run_creates_nothing(tmp_path):
    out = cli("run", str(SUITE), "--dry-run", "--profile", "mini", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "4 to run" in out.stdout and out.stdout.count(" run ") >= 4
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


def test_bad_suite_and_bad_profile_fail_cleanly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nrows:\n  - {label: a, methd: mask_rcnn}\n")
    out = cli("plan", str(bad), cwd=tmp_path)
    assert out.returncode == 1
    assert f"{bad}:3: rows[0].methd: unknown key 'methd' (did you mean 'method'?)" in out.stderr
    out = cli("run", str(SUITE), "--profile", "huge", "--dry-run", cwd=tmp_path)
    assert out.returncode == 1 and "has no profile 'huge'; available: full, mini, long" in out.stderr
    out = cli("run", str(SUITE), "--only", "nothing-matches", "--dry-run", cwd=tmp_path)
    assert out.returncode == 1 and "no run of suite 'test-tiny' matches" in out.stderr


def test_ui_serves_the_store(inline_store):
    root, uri, _ = inline_store
    port = free_port()
    process = subprocess.Popen(
        [cli_exe(), "ui", "--tracking-uri", uri, "--port", str(port)],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        assert url in line and uri in line
        assert "workflowType=machine_learning" in line  # MLflow 3 opens on the runs, not GenAI pages
        wait_until_answering(url, process)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="finds the submitit task through /proc (Linux)"
)
def test_preempted_submitit_task_requeues_and_resumes(tmp_path, migrated_db):
    """USR2 to a running task (what Slurm sends before preempting): submitit requeues it, and the run
    resumes from its checkpoint into the same MLflow run."""
    uri = fresh_store(migrated_db, tmp_path)
    spec = specs()["baseline"]
    command = [
        cli_exe(),
        "run",
        str(SUITE),
        "--only",
        "baseline",
        "--executor",
        "slurm",
        "--slurm-cluster",
        "local",
    ]
    command += ["--tracking-uri", uri, "--runs-dir", str(tmp_path / "runs"), "--log-every", "1"]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    last = tmp_path / "runs" / SUITE_NAME / spec.key / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 400
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert last.exists(), "the run ended before its first checkpoint"
    (job_dir,) = [d for d in (tmp_path / "runs" / SUITE_NAME / "submitit").iterdir() if d.name.isdigit()]
    controller = int(job_dir.name)  # submitit's local job id is its controller's pid
    tasks = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    os.kill(int(tasks[0]), signal.SIGUSR2)
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out
    (run,) = child_runs(uri)
    assert 0 < int(run.data.tags["resumed_from_step"]) < spec.config.schedule.max_steps
    check_finished_run(uri, run, spec, tmp_path / "runs", log_every_steps=True)


def test_report_renders_from_real_runs(inline_store, tmp_path):
    """`report --table 4` on the store of a real run: the baseline row carries that run's AP, the
    rows with no run show as missing (never as zero), and the paper's number stands beside ours."""
    root, uri, _ = inline_store
    (baseline,) = [r for r in child_runs(uri) if r.data.tags["row"] == "baseline"]
    out = cli("report", "--table", "4", "--suite", SUITE_NAME, "--tracking-uri", uri, "--out", str(tmp_path),
              "--no-log", cwd=root)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    csvs = sorted(tmp_path.rglob("*.csv"))
    assert csvs, out.stdout
    import pandas as pd

    table = pd.read_csv(csvs[0])  # long format: one line per (row, column)
    cells = table.set_index(["row", "column"])
    assert cells.loc[("baseline", "AP"), "mean"] == pytest.approx(baseline.data.metrics["segm_AP"], abs=0.05)
    assert cells.loc[("baseline", "AP"), "n"] == 1
    assert cells.loc[("baseline", "AP"), "paper"] == 21.6  # Table 4, first row
    assert cells.loc[("baseline + ShapeProp", "AP"), "n"] == 0  # no run: missing, not zero
    assert pd.isna(cells.loc[("baseline + ShapeProp", "AP"), "mean"])


def test_real_run_is_described_for_the_mlflow_ui(inline_store):
    """What MLflow's UI shows of a real run (tests/e2e/test_mlflow_ui_metadata.py covers the cases): the
    experiment kind, the parent's name, the datasets with the fingerprints of evaluation.json, the
    per-object table as an MLflow table equal to its CSV, MLflow's source tags."""
    import pandas as pd

    root, uri, _ = inline_store
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(tracking.experiment_name(SUITE_NAME))
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    (baseline,) = [r for r in child_runs(uri) if r.data.tags["row"] == "baseline"]
    parent = c.get_run(baseline.data.tags["mlflow.parentRunId"])
    assert parent.info.run_name.startswith(f"{SUITE_NAME} [full] ")
    assert parent.data.tags["command"].startswith("shapeprop-bench run ")
    for run in (baseline, parent):
        assert run.data.tags["mlflow.source.name"] == f"shapeprop-bench run {SUITE_NAME}"
        assert run.data.tags["mlflow.source.type"] == "LOCAL"
        assert run.data.tags["mlflow.source.git.commit"] == run.data.tags["git_commit"]
        assert run.data.tags["mlflow.note.content"]

    evaluation = json.loads(
        (root / "runs" / SUITE_NAME / baseline.data.tags["run_key"] / "evaluation.json").read_text()
    )
    assert evaluation["test_fingerprint"] and evaluation["test_fingerprint"] != evaluation["fingerprint"]
    datasets = {
        [t.value for t in i.tags if t.key == "mlflow.data.context"][0]: i.dataset
        for i in c.get_run(baseline.info.run_id).inputs.dataset_inputs
    }
    assert (datasets["training"].name, datasets["evaluation"].name) == ("synthetic/train", "synthetic/val")
    assert datasets["training"].digest == evaluation["fingerprint"][:12]
    assert datasets["evaluation"].digest == evaluation["test_fingerprint"][:12]

    artifacts = {a.path for a in c.list_artifacts(baseline.info.run_id, "tables")}
    assert artifacts == {"tables/gt_box_masks.json"}  # the per-image match tables are CSV only
    names = {a.path for a in c.list_artifacts(baseline.info.run_id)}
    assert {"coco_matches.csv", "coco_gt.csv", "gt_box_masks.csv"} <= names
    table = Path(c.download_artifacts(baseline.info.run_id, "tables/gt_box_masks.json", str(root)))
    csv = Path(c.download_artifacts(baseline.info.run_id, "gt_box_masks.csv", str(root)))
    pd.testing.assert_frame_equal(pd.read_json(table, orient="split"), pd.read_csv(csv), check_dtype=False)
