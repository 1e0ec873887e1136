"""A real SQLite MLflow store filled with runs in the tracking contract's layout, for the report
tests (tests/harness/report/) and the archive tests: `Store`, and `fill`, which logs the runs the
report tests expect (Tables 1, 2 and 4, Figures 6 and 9)."""

from __future__ import annotations

import csv
import io
import itertools
import math
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from harness.report import figures

_clock = itertools.count(1_700_000_000_000, 1000)  # increasing start times (ms)


class Store:
    """A SQLite MLflow store under `root` with one experiment per suite, like harness/tracking.py writes."""

    def __init__(self, root: Path):
        self.root = root
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=self.uri)
        self._experiments: dict[str, str] = {}
        self._parents: dict[str, str] = {}

    def experiment(self, suite: str) -> str:
        if suite not in self._experiments:
            self._experiments[suite] = self.client.create_experiment(
                f"shapeprop-bench/{suite}", artifact_location=str(self.root / "artifacts" / suite)
            )
            parent = self.client.create_run(
                self._experiments[suite], tags={"kind": "invocation"}, start_time=next(_clock)
            )
            self.client.log_metric(parent.info.run_id, "segm_AP", 99.0)  # must never be reported
            self._parents[suite] = parent.info.run_id
        return self._experiments[suite]

    def log_run(
        self,
        suite: str,
        reproduces: str,
        row: str,
        metrics: dict[str, float],
        seed: int = 0,
        profile: str = "mini",
        key: str | None = None,
        params: dict[str, str] | None = None,
        artifacts: dict[str, Path] | None = None,
        status: str = "FINISHED",
    ) -> str:
        """A child run with the contract's tags; returns its id."""
        experiment_id = self.experiment(suite)
        tags = {
            "kind": "run",
            "suite": suite,
            "reproduces": reproduces,
            "row": row,
            "method": "mask_rcnn",
            "seed": str(seed),
            "run_key": key or f"{suite}:{row}:{seed}:{profile}:{sorted((params or {}).items())}",
            "profile": profile,
            "git_commit": "0" * 40,
            "git_dirty": "false",
            "device": "cpu",
            "dataset_fingerprint": "f" * 16,
            "mlflow.parentRunId": self._parents[suite],
        }
        start = next(_clock)
        run = self.client.create_run(experiment_id, start_time=start, tags=tags)
        run_id = run.info.run_id
        self.client.log_batch(
            run_id,
            metrics=[Metric(name, float(value), start, 0) for name, value in metrics.items()],
            params=[Param(name, str(value)) for name, value in (params or {}).items()],
        )
        for name, path in (artifacts or {}).items():
            assert path.name == name
            self.client.log_artifact(run_id, str(path))
        if status != "RUNNING":
            self.client.set_terminated(run_id, status=status, end_time=start + 500)
        return run_id


def ap_metrics(ap: float, ap50: float | None = None, ap75: float | None = None, sizes: bool = True):
    """The contract's mask-AP metric names with the given values (sizes: APs/m/l = ap - 1, ap, ap + 1)."""
    out = {
        "segm_AP": ap,
        "segm_AP50": ap + 20 if ap50 is None else ap50,
        "segm_AP75": ap - 1 if ap75 is None else ap75,
    }
    if sizes:
        out |= {"segm_APs": ap - 1, "segm_APm": ap, "segm_APl": ap + 1}
    return out | {"bbox_AP": ap + 3, "infer_s_per_img": 0.05, "train_s_per_step": 0.3}


# --------------------------------------------------------------------------- the store

BASELINE_AP = [20.0, 21.0, 23.0]
T4_MORE_BOXES_SP = "baseline + More boxes + ShapeProp"
T1_BASE_NV = "R-50-FPN | non-voc -> voc | Mask R-CNN (Baseline)"
FRACTIONS = [0.1, 0.02, 0.01]


def fig6_ap(row: str, fraction: float, seed: int) -> float:
    return (10.0 if row == "Mask R-CNN" else 12.0) + 100 * fraction + seed


def fill(s: Store) -> Store:
    root = s.root
    # Table 4 (suite "ablations", profile mini unless said otherwise).
    for seed, ap in enumerate(BASELINE_AP):
        s.log_run("ablations", "table4", "baseline", ap_metrics(ap), seed=seed)
    s.log_run("ablations", "table4", "baseline", ap_metrics(50.0), profile="full")
    s.log_run(
        "ablations",
        "table4",
        "baseline + ShapeProp (Channel-agnostic)",
        ap_metrics(0.0, 0.0, 0.0, sizes=False),
    )
    s.log_run("ablations", "table4", "baseline + More head params", {}, status="FAILED")
    s.log_run("ablations", "table4", "baseline + ShapeProp", ap_metrics(99.0), key="sp", status="FAILED")
    s.log_run("ablations", "table4", "baseline + ShapeProp", ap_metrics(98.0), key="sp", status="RUNNING")
    s.log_run("ablations", "table4", "baseline + ShapeProp", ap_metrics(22.0), key="sp")
    s.log_run("ablations", "table4", "baseline + More boxes", ap_metrics(10.0), key="mb")  # re-run later
    s.log_run("ablations", "table4", "baseline + More boxes", ap_metrics(24.0), key="mb")
    s.log_run("ablations", "table4", T4_MORE_BOXES_SP, ap_metrics(5.0), key="old-config")
    s.log_run("ablations", "table4", T4_MORE_BOXES_SP, ap_metrics(26.0), key="new-config")
    s.log_run("ablations", "table4", "baseline + wider FPN", ap_metrics(23.0))
    s.log_run("ablations", "table4", "foo | bar", ap_metrics(1.0))
    s.log_run("table2", "table2", "BDD100k (7k w/ masks, 67k w/ boxes) | Mask R-CNN", ap_metrics(24.6))
    # Table 1, from its two suites; one label with odd case and spacing.
    s.log_run("table1", "table1", T1_BASE_NV, ap_metrics(10.0), seed=0)
    s.log_run("table1", "table1", T1_BASE_NV, ap_metrics(12.0), seed=1)
    s.log_run("table1", "table1", "R-50-FPN | voc -> non-voc | Mask R-CNN (Baseline)", ap_metrics(8.0))
    s.log_run("table1", "table1", "R-50-FPN | voc -> non-voc | Mask^X R-CNN", {}, status="FAILED")
    s.log_run(
        "table1", "table1", "r-50-fpn|NON-VOC -> VOC |  mask r-cnn w/ shapeprop (ours)", ap_metrics(30.0)
    )
    s.log_run(
        "table1_r101", "table1", "R-101-FPN | non-voc -> voc | Fully supervised (Oracle)", ap_metrics(37.0)
    )
    # Figure 6: two rows x three fractions x two seeds, one run missing.
    for row, fraction, seed in itertools.product(
        ["Mask R-CNN", "Mask R-CNN w/ ShapeProp"], FRACTIONS, [0, 1]
    ):
        if (row, fraction, seed) == ("Mask R-CNN w/ ShapeProp", 0.01, 1):
            continue
        params = {"data.data_fraction": str(fraction), "model.backbone": "tiny"}
        s.log_run(
            "fractions", "figure6", row, ap_metrics(fig6_ap(row, fraction, seed)), seed=seed, params=params
        )
    s.killed = s.log_run(
        "fractions", "figure6", "Mask R-CNN", {}, params={"data.data_fraction": "0.005"}, status="KILLED"
    )
    # Figure 9: one run with its best-overlap table, one without.
    overlap = root / "best_overlap.csv"
    overlap.write_text(best_overlap_csv())
    s.log_run(
        "best_overlap",
        "figure9",
        "Mask R-CNN w/ ShapeProp",
        ap_metrics(25.0),
        artifacts={overlap.name: overlap},
    )
    s.log_run("best_overlap", "figure9", "Mask R-CNN w/ ShapeProp", ap_metrics(25.0), seed=1)
    return s


def best_overlap_csv() -> str:
    """300 objects from 8 to 300 px across; saliency covers small objects better than large ones."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(figures.OVERLAP_COLUMNS)
    for i in range(300):
        side = 8 * (300 / 8) ** (i / 299)
        saliency = max(0.05, 0.9 - side / 400 - 0.1 * math.sin(i))
        shape = min(0.95, 0.7 + 0.1 * math.cos(i))
        writer.writerow([i // 3, i, round(side * side, 2), round(saliency, 4), round(shape, 4)])
    return out.getvalue()


def quiet():
    from rich.console import Console

    return Console(file=io.StringIO(), width=200)
