"""Mutation testing of the modules of issue 22 with cosmic-ray (`make mutation`; docs/mutation-testing.md).

The checkout is never mutated: the commit `--rev` (default HEAD; commit the tests first) is checked out
in a temporary git worktree, with this checkout's compiled operator (`shapeprop/_C*.so`) copied in,
and cosmic-ray mutates the files there, one mutant at a time, each followed by the target's few test
files (`pytest -x`: the first failing test kills it), run in a fork of a process that has imported
torch already (`forkserver.py`). Per target only the named definitions of its files are mutated (all
of a file where none are named), never type annotations (not evaluated: `from __future__ import
annotations`), with one replacement per operator and number (`OPERATORS`).

Writes `<out>/report.md` (the per-target table, the surviving mutants with file:line and the change)
and keeps each target's cosmic-ray session (`<out>/<target>.sqlite`, readable with `cr-report`).
"""

from __future__ import annotations

import argparse
import ast
import compileall
import glob
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from forkserver import TIMEOUT

REPO = Path(__file__).resolve().parents[2]
FORKSERVER = Path(__file__).resolve().with_name("forkserver.py")
SERVER_PID: int | None = None


@dataclass
class Target:
    name: str
    files: dict[
        str, list[str]
    ]  # file (or glob) -> definitions to mutate ("f", "Class", "Class.method"); [] = all
    tests: list[str]  # globs, in the order they run (the most direct first: -x stops at the first failure)
    deselect: list[str] = field(default_factory=list)  # test ids too slow to run per mutant


# The tests: the fast test files (or tests) that exercise each target. Left out, as too slow per mutant:
# the disk-growing training test of tests/shapeprop/test_head.py (5 min) and the end-to-end harness tests
# that train (tests/e2e/test_harness.py, the executors' worker tests: a minute or more each).
SLOW_HEAD_TEST = "tests/shapeprop/test_head.py::test_head_learns_to_grow_a_seed_into_a_disk"
TARGETS = [
    Target(
        "mil",
        {"shapeprop/mil.py": []},
        ["tests/shapeprop/test_mil.py", "tests/shapeprop/test_head.py"],
        [SLOW_HEAD_TEST],
    ),
    Target(
        "head",
        {"shapeprop/head.py": []},
        [
            "tests/shapeprop/test_head.py",
            "tests/shapeprop/test_mil.py",
            "tests/shapeprop/models/test_params.py",
        ],
        [SLOW_HEAD_TEST],
    ),
    Target(
        "mask_branch",
        {
            "shapeprop/models/mask_branch.py": [
                "MaskBranch",
                "mask_branch_losses",
                "mask_branch_predict",
                "_has_mask",
                "mask_targets",
                "_select_class",
                "shapeprop_rois",
                "_cat_targets",
            ]
        },
        ["tests/shapeprop/models/test_mask_branch*.py", "tests/shapeprop/models/test_build.py"],
        [  # training and the backbone, not the mask branch: 14 of test_build.py's 23 s
            "tests/shapeprop/models/test_build.py::test_tiny_detector_with_shapeprop_loss_falls",
            "tests/shapeprop/models/test_build.py::test_backbone_weights_from_local_checkpoint",
            "tests/shapeprop/models/test_build.py::test_detectors_take_their_sizes_from_the_backbone_recipe",
        ],
    ),
    Target("splits", {"shapeprop/data/splits.py": []}, ["tests/shapeprop/data/test_splits*.py"]),
    Target("propagation", {"shapeprop/ops/propagation.py": []}, ["tests/shapeprop/ops/test_propagation.py"]),
    Target(
        "suite",
        {"harness/suite/*.py": []},
        [  # what tests/test_suite.py and tests/test_suite_expansions.py held before issue 43's split
            "tests/harness/suite/test_load.py",
            "tests/harness/suite/test_expand.py",
            "tests/harness/suite/test_keys.py",
            "tests/harness/suite/test_problems.py",
            "tests/harness/suite/test_config_keys.py",
            "tests/harness/suite/test_schema.py",
            "tests/harness/test_methods.py",
            "tests/harness/test_plan.py",
            "tests/harness/test_run_tags.py",
            "tests/harness/cli/test_inspect.py",
            "tests/harness/suite/test_expand_recorded.py",
        ],
    ),
    Target(
        "runner_state",
        {
            "harness/runner.py": [
                "_open_run",
                "run_one",
                "_run_other_rank",
                "_record_failure",
                "record_crash",
                "SuiteSummary",
                "RunOptions",
                "run_suite",
            ],
            "harness/plan.py": ["PlannedRun", "plan"],
            "harness/tracking.py": ["KeyState", "key_states", "_child_runs_client", "_child_runs_sqlite"],
            "harness/executors/base.py": ["RunOutcome"],
        },
        [
            "tests/harness/test_runner*.py",
            "tests/harness/test_tracking.py::test_key_states_finished_wins_else_the_newest_run",
            "tests/harness/test_preflight.py::test_run_suite_checks_before_recording_and_submitting",
        ],
    ),
]

# One replacement per operator (as mutmut does), not cosmic-ray's every pair: + -> -, < -> <=, ...
OPERATORS = re.compile(
    "core/("
    "ReplaceBinaryOperator_(Add_Sub|Sub_Add|Mul_Div|Div_Mul|FloorDiv_Div|Mod_FloorDiv|Pow_Mul"
    "|LShift_RShift|RShift_LShift|BitOr_BitAnd|BitAnd_BitOr|BitXor_BitOr)"
    "|ReplaceComparisonOperator_(Eq_NotEq|NotEq_Eq|Lt_LtE|LtE_Lt|Gt_GtE|GtE_Gt|Is_IsNot|IsNot_Is)"
    "|ReplaceUnaryOperator_(USub_UAdd|Delete_Not|Invert_USub)"
    "|NumberReplacer|AddNot|ReplaceTrueWithFalse|ReplaceFalseWithTrue|ReplaceAndWithOr|ReplaceOrWithAnd"
    "|ReplaceBreakWithContinue|ReplaceContinueWithBreak|ZeroIterationForLoop|ExceptionReplacer|RemoveDecorator"
    ")"
)


def sh(*cmd: str, cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, check=check, capture_output=True, text=True)


# --------------------------------------------------------------------------- which mutants


def _char_col(line: str, byte_col: int) -> int:
    return len(line.encode()[:byte_col].decode(errors="ignore"))


def spans(path: Path, names: list[str]) -> tuple[list[tuple[int, int]], list[tuple[tuple, tuple]]]:
    """Line ranges of the named definitions (the whole file for none), and the type annotations'
    (start, end) positions, in parso's (line, character column)."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    ranges = []
    if not names:
        ranges = [(1, len(lines))]
    for name in names:
        scope, node = tree.body, None
        for part in name.split("."):
            node = next(
                (n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part), None
            )
            if node is None:
                sys.exit(f"{path}: no definition {name!r} (update TARGETS in {Path(__file__).name})")
            scope = node.body
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        ranges.append((first, node.end_lineno))
    annotations = []
    for node in ast.walk(tree):
        found = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            found = [x.annotation for x in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg] if x]
            found.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            found = [node.annotation]
        for ann in found:
            if ann is not None:
                start = (ann.lineno, _char_col(lines[ann.lineno - 1], ann.col_offset))
                end = (ann.end_lineno, _char_col(lines[ann.end_lineno - 1], ann.end_col_offset))
                annotations.append((start, end))
    return ranges, annotations


def files_of(root: Path, target: Target) -> dict[str, list[str]]:
    """The target's files in the tree `root` (globs expanded) and their definitions to mutate."""
    return {
        f: names for pattern, names in target.files.items() for f in sorted(glob.glob(pattern, root_dir=root))
    }


def init_session(root: Path, target: Target, env: dict, out: Path, command: list[str], timeout: int) -> Path:
    """A cosmic-ray config and session (`<out>/<target>.toml`, `.sqlite`) holding only the target's
    mutants: none outside its definitions, in annotations, or of operators not in OPERATORS."""
    files = files_of(root, target)
    config = out / f"{target.name}.toml"
    config.write_text(
        "[cosmic-ray]\n"
        f"module-path = {json.dumps(list(files))}\n"
        f"timeout = {timeout}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(shlex.join(command))}\n"
        '[cosmic-ray.distributor]\nname = "local"\n'
    )
    db = out / f"{target.name}.sqlite"
    db.unlink(missing_ok=True)
    sh(cosmic_ray(), "init", str(config), str(db), cwd=root, env=env)
    where = {f: spans(root / f, names) for f, names in files.items()}
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT job_id, module_path, operator_name, start_pos_row, start_pos_col, occurrence "
            "FROM mutation_specs"
        ).fetchall()
        drop, numbers = [], set()
        for job, module, op, row, col, _ in sorted(rows, key=lambda r: r[1:]):
            ranges, annotations = where[module]
            inside = any(a <= row <= b for a, b in ranges)
            in_annotation = any(s <= (row, col) < e for s, e in annotations)
            number_again = op == "core/NumberReplacer" and (module, row, col) in numbers  # n + 1, not n - 1
            numbers.add((module, row, col))
            if not OPERATORS.fullmatch(op) or not inside or in_annotation or number_again:
                drop.append((job,))
        con.executemany("DELETE FROM mutation_specs WHERE job_id = ?", drop)
        con.executemany("DELETE FROM work_items WHERE job_id = ?", drop)
    return db


def count(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT count(*) FROM work_items").fetchone()[0]


def cosmic_ray() -> str:
    found = shutil.which("cosmic-ray", path=str(Path(sys.executable).parent)) or shutil.which("cosmic-ray")
    if found is None:
        sys.exit("cosmic-ray is not installed: make install (it is in the dev extra)")
    return found


# --------------------------------------------------------------------------- running


def pytest_args(root: Path, target: Target) -> list[str] | None:
    tests = []
    for pattern in target.tests:  # a glob, or a file and a test in it (file::test)
        path, sep, node = pattern.partition("::")
        tests += [f + sep + node for f in sorted(glob.glob(path, root_dir=root))]
    if not tests:
        return None
    # addopts emptied, its import mode kept: tests/ has same-named files in different folders
    args = [
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "--import-mode=importlib",
        "-m",
        "not slow",
    ]
    for test in target.deselect:
        args += ["--deselect", test]
    return args + list(dict.fromkeys(tests))


def test_command(socket_path: Path, timeout_s: float, args: list[str]) -> list[str]:
    return [sys.executable, str(FORKSERVER), "run", str(socket_path), str(timeout_s), *args]


def run_target(root: Path, target: Target, env: dict, out: Path, socket_path: Path) -> dict:
    args = pytest_args(root, target)
    if args is None:
        print(f"[{target.name}] no test file matches {target.tests}: skipped", flush=True)
        return {}
    started = time.monotonic()
    baseline = subprocess.run(
        test_command(socket_path, 3600, args), cwd=root, env=env, capture_output=True, text=True
    )
    baseline_s = time.monotonic() - started
    if baseline.returncode != 0:
        print(baseline.stdout[-5000:] + baseline.stderr[-2000:])
        sys.exit(f"[{target.name}] the tests fail without any mutation: pytest {shlex.join(args)}")
    timeout_s = round(2 * baseline_s + 60)
    db = init_session(root, target, env, out, test_command(socket_path, timeout_s, args), timeout_s + 60)
    print(
        f"[{target.name}] {count(db)} mutants; the tests pass unmutated in {baseline_s:.0f} s "
        f"(timeout {timeout_s} s): pytest {shlex.join(args)}",
        flush=True,
    )
    started, cpu = time.monotonic(), _cpu_s()
    sh(cosmic_ray(), "exec", str(out / f"{target.name}.toml"), str(db), cwd=root, env=env)
    result = summarise(db)
    result.update(
        baseline_s=baseline_s,
        seconds=time.monotonic() - started,
        cpu_s=_cpu_s() - cpu,
        tests=args[args.index("not slow") + 1 :],
    )
    print(f"[{target.name}] {fmt_counts(result['counts'])} in {result['seconds'] / 60:.1f} min", flush=True)
    return result


def _cpu_s() -> float:
    """CPU seconds of this process's waited-for children (cosmic-ray) and of the fork server's children,
    which the server reaps: read from the server's /proc entry, see `start_forkserver`."""
    own = os.times()
    total = own.children_user + own.children_system
    if SERVER_PID:
        fields = Path(f"/proc/{SERVER_PID}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def summarise(db: Path) -> dict:
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT m.module_path, m.start_pos_row, m.operator_name, r.test_outcome, r.output, r.diff "
            "FROM mutation_specs m LEFT JOIN work_results r ON r.job_id = m.job_id "
            "ORDER BY m.module_path, m.start_pos_row, m.operator_name"
        ).fetchall()
    counts = dict.fromkeys(["killed", "survived", "timeout", "incompetent", "pending"], 0)
    survivors = []
    for module, line, op, outcome, output, diff in rows:
        if outcome is None:
            kind = "pending"
        elif outcome.lower() == "killed":
            timed_out = output == "timeout" or TIMEOUT in (output or "")
            kind = "timeout" if timed_out else "killed"
        else:
            kind = outcome.lower()
        counts[kind] += 1
        if kind == "survived":
            change = [d for d in (diff or "").splitlines() if d[:1] in "+-" and d[:3] not in ("+++", "---")]
            survivors.append((module, line, op.removeprefix("core/"), " / ".join(c.strip() for c in change)))
    return {"counts": counts, "survivors": survivors}


def score(c: dict) -> float:
    done = c["killed"] + c["timeout"] + c["survived"]
    return 100 * (c["killed"] + c["timeout"]) / done if done else float("nan")


def fmt_counts(c: dict) -> str:
    return (
        f"killed {c['killed']}, survived {c['survived']}, timeout {c['timeout']}, "
        f"incompetent {c['incompetent']}: {score(c):.1f} %"
    )


def report(results: dict[str, dict], commit: str, total_s: float) -> str:
    out = [
        f"# Mutation testing of {commit[:12]}",
        "",
        f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPU cores; "
        f"total {total_s / 60:.0f} min wall. Score = (killed + timeout) / (killed + timeout + survived).",
        "",
        "| target | killed | survived | timeout | incompetent | total | score | wall min | CPU min | CPU s/mutant |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        c = r["counts"]
        total = sum(v for k, v in c.items() if k != "pending")
        per = r["cpu_s"] / total if total else 0.0
        out.append(
            f"| {name} | {c['killed']} | {c['survived']} | {c['timeout']} | {c['incompetent']} | {total} "
            f"| {score(c):.1f} % | {r['seconds'] / 60:.0f} | {r['cpu_s'] / 60:.0f} | {per:.1f} |"
        )
    out += ["", "Tests per target:", ""]
    out += [f"- {name}: {' '.join(r['tests'])}" for name, r in results.items()]
    for name, r in results.items():
        out += ["", f"## Survivors: {name} ({len(r['survivors'])})", ""]
        out += [f"- {m}:{line} {op}: `{change}`" for m, line, op, change in r["survivors"]]
    return "\n".join(out) + "\n"


def start_forkserver(root: Path, env: dict, socket_path: Path) -> subprocess.Popen:
    global SERVER_PID
    server = subprocess.Popen(
        [sys.executable, str(FORKSERVER), "serve", str(socket_path)],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
    )
    if server.stdout.readline().strip() != b"forkserver: ready":
        sys.exit("the fork server did not start")
    SERVER_PID = server.pid
    return server


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rev", default="HEAD", help="the commit to measure (default HEAD)")
    parser.add_argument("--only", action="append", help="a target to run (repeatable); default all")
    parser.add_argument("--out", type=Path, help="report folder (default build/mutation/<commit>)")
    parser.add_argument("--list", action="store_true", help="count each target's mutants and stop")
    args = parser.parse_args()
    targets = [t for t in TARGETS if not args.only or t.name in args.only]
    if args.only and len(targets) != len(set(args.only)):
        sys.exit(f"unknown target in {args.only}; targets: {', '.join(t.name for t in TARGETS)}")
    cosmic_ray()
    commit = sh("git", "rev-parse", "--verify", f"{args.rev}^{{commit}}", cwd=REPO).stdout.strip()
    out = (args.out or REPO / "build" / "mutation" / commit[:12]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    operator = sorted(REPO.glob("shapeprop/_C*.so"))
    if not operator:
        sys.exit("shapeprop/_C*.so is not built: make install")

    tmp = Path(tempfile.mkdtemp(prefix="shapeprop-mutation-"))
    root = tmp / "tree"
    sh("git", "worktree", "add", "--detach", str(root), commit, cwd=REPO)
    try:
        for so in operator:
            shutil.copy2(so, root / "shapeprop" / so.name)
        env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        probe = "import shapeprop, harness; print(shapeprop.__file__, harness.__file__)"
        where = sh(sys.executable, "-c", probe, cwd=root, env=env).stdout.split()
        if not all(Path(w).is_relative_to(root) for w in where):
            sys.exit(
                f"the worktree's packages are not the ones imported ({where}): is PYTHONPATH overridden?"
            )
        # Bytecode for everything but the mutated files (tests run with PYTHONDONTWRITEBYTECODE).
        compileall.compile_dir(root, quiet=1, workers=1)
        for target in targets:
            for f in files_of(root, target):
                for pyc in (root / f).parent.glob(f"__pycache__/{Path(f).stem}.*.pyc"):
                    pyc.unlink()
        if args.list:
            (out / "list").mkdir(exist_ok=True)
            for target in targets:
                db = init_session(root, target, env, out / "list", ["true"], 1)
                print(
                    f"{target.name}: {count(db)} mutants; tests: pytest {shlex.join(pytest_args(root, target) or [])}"
                )
            shutil.rmtree(out / "list")
            return
        server = start_forkserver(root, env, tmp / "fork.sock")
        try:
            started, results = time.monotonic(), {}
            for target in targets:
                result = run_target(root, target, env, out, tmp / "fork.sock")
                if result:
                    results[target.name] = result
                    (out / "report.md").write_text(report(results, commit, time.monotonic() - started))
        finally:
            server.terminate()  # and the test run in progress (forkserver._stop)
            server.wait()
        print("\n" + (out / "report.md").read_text())
        print(f"Written: {out / 'report.md'}")
    finally:
        sh("git", "worktree", "remove", "--force", str(root), cwd=REPO, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
