"""Benchmark: render a report from N runs (DESIGN target: 100 runs in under 5 s).

    python -m harness.report.bench --runs 100

Fills a temporary SQLite store with N finished Table 2 runs in the tracking layout (spread over
the table's rows and seeds), then times `shapeprop-bench report --table 2` in a fresh process
(imports included) and the in-process render alone.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def fill_store(uri: str, runs: int) -> None:
    """N finished table2 runs with the contract's tags, params and the AP metric family."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from harness.report.reference import load_reference

    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("shapeprop-bench/table2")
    labels = list(dict.fromkeys(f"{c.section} | {c.row}" for c in load_reference("table2")))
    for i in range(runs):
        label, seed = labels[i % len(labels)], i // len(labels)
        tags = {"kind": "run", "suite": "table2", "reproduces": "table2", "row": label, "method": "m"}
        tags |= {"seed": str(seed), "run_key": f"k{i}", "profile": "mini"}
        run = client.create_run(experiment, tags=tags)
        now = int(time.time() * 1000)
        metrics = [
            Metric(f"{kind}_{m}", 20.0 + i % 7, now, 800)
            for kind in ("segm", "bbox")
            for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")
        ]
        params = [Param(f"p{j}", str(j)) for j in range(60)]  # a resolved config has ~60 keys
        client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=[RunTag("device", "cpu")])
        client.set_terminated(run.info.run_id)


def main(runs: int) -> None:
    """Time report rendering from a store of `runs` runs."""
    from mlflow import MlflowClient
    from rich.console import Console

    from harness.report.build import table_report

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        started = time.perf_counter()
        fill_store(uri, runs)
        print(f"filled a store with {runs} runs in {time.perf_counter() - started:.1f} s")

        command = [sys.executable, "-m", "harness.cli.report", "--table", "2", "--profile", "mini"]
        command += ["--tracking-uri", uri, "--out", str(Path(tmp) / "out"), "--no-log"]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=tmp)
        print(f"report --table 2 (new process, imports included): {time.perf_counter() - started:.2f} s")

        client = MlflowClient(tracking_uri=uri)
        table_report(2, client, "mini", Path(tmp) / "warm", console=Console(file=io.StringIO()))  # warm-up
        started = time.perf_counter()
        report = table_report(2, client, "mini", Path(tmp) / "out2", console=Console(file=io.StringIO()))
        print(f"render in process (fetch, aggregate, 4 files): {time.perf_counter() - started:.2f} s")
        print(f"runs aggregated: {int(report.data.groupby(['section', 'row'])['n'].max().sum())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="finished runs in the store (default: 100)")
    main(parser.parse_args().runs)
