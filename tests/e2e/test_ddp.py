"""Data-parallel training on the CPU: two processes (gloo) train the tiny detector as one.

Each process is `tests/ddp_worker.py`, started as Lightning expects processes started outside it.
What the two must equal: one process whose loss is the mean of the two halves' losses (`--halves`).
DDP averages the two ranks' gradients, and each rank's loss terms are means over its own half
(RPN terms over its sampled anchors, the box terms over its sampled RoIs, the mask and ShapeProp
terms over its positive RoIs), so the gradient step is that of the mean of the two half-batch
means: the same quantity as `--halves`, equal up to float32 summation order, whose differences
grow with the steps (measured: 1e-9 after step 1, 7e-5 after step 3, relative to the distance
trained; we allow 1e-4, where one process on the whole batch differs by about 0.8 and a gradient
summed instead of averaged by about 1). One process on the whole global batch is a different quantity
(a mean over all RoIs of the four images weights the halves by their RoI counts): its difference
is in the closing note of issue 20, not asserted. Every anchor and proposal is sampled (no random
subset), so no random draw differs between the runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shapeprop.data import catalog
from tests.helpers import TEST_SUITES

WORKER = Path(__file__).with_name("ddp_worker.py")
STEPS = 3


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(out: Path, data: Path, workdir: Path, world: int, *extra: str) -> list[dict]:
    """Run `world` worker processes to the end; their records, by rank."""
    port = str(_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(out), "--rank", str(r), "--world", str(world), "--port", port]
            + ["--data", str(data), "--workdir", str(workdir), "--steps", str(STEPS), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(world)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    codes = [p.returncode for p in procs]
    return codes, logs, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    catalog.load("synthetic", root=root, split="train", num_images=8, image_size=64)  # made once
    return root


@pytest.mark.parametrize("shapeprop", [False, True], ids=["plain", "shapeprop"])
def test_two_processes_train_as_one(data, tmp_path, shapeprop):
    flag = ("--shapeprop",) if shapeprop else ()
    codes, logs, (rank0, rank1) = _train(tmp_path / "two", data, tmp_path / "w2", 2, *flag)
    assert codes == [0, 0], logs
    codes, logs, (halves,) = _train(tmp_path / "halves", data, tmp_path / "wh", 1, "--halves", *flag)
    assert codes == [0], logs

    assert torch.equal(rank0["initial"], rank1["initial"])  # DDP broadcast the same start
    for a, b, h in zip(rank0["steps"], rank1["steps"], halves["steps"], strict=True):
        # the global batch of 4 is split in two halves, without overlap or loss
        assert len(a["images"]) == len(b["images"]) == 2
        assert a["images"] + b["images"] == h["images"]
        # both ranks hold the same parameters after every step
        assert torch.equal(a["params"], b["params"]), f"ranks differ after step {a['step']}"
        # ... and they are those of one process on the mean of the two half-batch losses
        trained = (h["params"] - halves["initial"]).norm()
        assert (a["params"] - h["params"]).norm() < 1e-4 * trained, f"step {a['step']}"
    assert len(rank0["steps"]) == STEPS
    # only rank 0 evaluates (train_detector's is_global_zero), and one set of checkpoints is written
    # (the newest two of the steps', `schedule.keep_checkpoints`)
    assert [rank0["global_zero"], rank1["global_zero"]] == [True, False]
    names = sorted(p.name for p in (tmp_path / "w2" / "checkpoints").iterdir())
    assert names == ["last.ckpt"] + [f"step_{s:07d}.ckpt" for s in range(STEPS - 1, STEPS + 1)]


def test_killed_run_resumes_to_the_same_result(data, tmp_path):
    codes, logs, (whole, _) = _train(tmp_path / "whole", data, tmp_path / "w-whole", 2)
    assert codes == [0, 0], logs
    codes, logs, _ = _train(tmp_path / "killed", data, tmp_path / "w-killed", 2, "--exit-after", "1")
    assert codes == [3, 3], logs  # both died in step 2, after step 1's checkpoint
    codes, logs, (resumed, _) = _train(tmp_path / "resumed", data, tmp_path / "w-killed", 2)
    assert codes == [0, 0], logs
    assert [s["step"] for s in resumed["steps"]] == list(range(2, STEPS + 1))  # from the checkpoint on
    assert torch.equal(resumed["final"], whole["final"])


@pytest.mark.parametrize("executor", ["inline", "slurm"], ids=["local", "submitit"])
def test_a_suite_row_on_two_processes_is_one_mlflow_run(tmp_path, executor):
    """Through the CLI, a row of `schedule.devices=2` on the CPU: started as two ranks by the local
    executor (the default inline executor hands it over) or as a two-task job on submitit's local
    cluster; rank 0 alone opens, logs and finishes the MLflow run and evaluates."""
    from harness import tracking

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["run", str(TEST_SUITES / "tiny.yaml"), "--only", "baseline"]
    args += ["--set", "schedule.devices=2", "--tracking-uri", uri, "--runs-dir", str(tmp_path / "runs")]
    args += ["--log-every", "1", "--executor", executor]
    if executor == "slurm":
        args += ["--slurm-cluster", "local"]
    exe = Path(sys.executable).with_name("shapeprop-bench")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [str(exe), *args], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr

    c = tracking.client(uri)
    experiment = c.get_experiment_by_name(tracking.experiment_name("test-tiny"))
    runs = c.search_runs([experiment.experiment_id], filter_string="tags.kind = 'run'")
    assert len(runs) == 1, [r.info.run_id for r in runs]  # one MLflow run, not one per rank
    (run,) = runs
    assert run.info.status == "FINISHED" and "segm_AP" in run.data.metrics
    for name in ("loss", "lr"):  # each step logged once: no second rank logging into the same run
        assert sorted(m.step for m in c.get_metric_history(run.info.run_id, name)) == [1, 2, 3, 4]
    workdir = next((tmp_path / "runs" / "test-tiny").glob("????????????????"))
    run_log = (workdir / "run.log").read_text()
    assert run_log.count("into MLflow run") == 1, run_log  # one process opened an MLflow run
    # really DDP: Lightning's rank-0 banner, in the run's log (local) or the task's (submitit)
    logs = [workdir / "run.log"] + list((tmp_path / "runs").rglob("*_0_log.*"))
    banner = "".join(p.read_text() for p in logs)
    assert "Starting with 2 processes" in banner and "GLOBAL_RANK: 0, MEMBER: 1/2" in banner
    names = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step_0000002.ckpt", "step_0000004.ckpt"]  # one set
