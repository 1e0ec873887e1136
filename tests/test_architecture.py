"""The layout rules of the README's architecture section: no import circle, small modules; and the
tests' layout (tests/README.md): tests/ mirrors the packages, and a module without a test file of
its own is a known one, with the reason."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
PACKAGES = ("shapeprop", "harness")
MAX_LINES = 420  # "about 400"


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports anywhere in its file (module level or inside a
    function: an import moved into a function to dodge a circle is still a circle)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                    for alias in node.names
                ]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_library_or_the_harness():
    assert cycles(import_graph()) == []


def test_no_module_is_much_over_400_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


# --------------------------------------------------------------------------- the tests' layout

# tests/<package>/.../test_<module>.py tests <package>/.../<module>.py; test_<module>_<aspect>.py
# too (tests/harness/test_runner_states.py); test_<package>.py tests a package as a whole.
# Besides the mirrors: tests/e2e/ (end to end, across many modules) and tests/tools/ (tools/*.py).
MIRRORED = {"shapeprop": ROOT / "shapeprop", "harness": ROOT / "harness", "tools": ROOT / "tools"}
OTHER_DIRS = ("e2e",)
TOP_LEVEL = {"test_architecture.py"}

# Modules with no test file of their name, each with why (most are tested through another test
# file). A new module needs a test file beside it (tests/<package>/.../test_<module>.py) or a line
# here; a module that gets a test file must leave this list.
UNTESTED = {
    "harness.retry": "with_retry (tenacity); its tests are tracking's, which re-exports it: tests/harness/test_tracking.py",
    "shapeprop.contract": "the callbacks and result types; through tests/harness/test_run_result.py and tests/shapeprop/test_experiment.py",
    "harness.callbacks": "MLflow callbacks of a run; through tests/harness/test_runner_states*.py and tests/e2e/",
    "harness.cli.archive": "`archive`; through the CLI in tests/harness/test_archive.py",
    "harness.cli.options": "options shared by the commands; through every CLI test",
    "harness.cli.predict": "`predict`; through the CLI in tests/shapeprop/test_serving.py",
    "harness.cli.report": "`report`; through the CLI in tests/harness/report/test_build.py and test_claims.py",
    "harness.cli.run": "`run`; through the CLI in tests/e2e/test_harness.py and tests/harness/test_preflight.py",
    "harness.cli.show": "`show`; through the CLI in tests/harness/test_show.py",
    "harness.environment": "versions, CUDA, git state; through the environment tags in tests/harness/test_tracking.py",
    "harness.executors.base": "tested with its package in tests/harness/test_executors.py",
    "harness.executors.local": "tested with its package in tests/harness/test_executors.py",
    "harness.executors.slurm": "tested with its package in tests/harness/test_executors.py",
    "harness.predict": "`predict` on images; through the CLI in tests/shapeprop/test_serving.py",
    "harness.report.bench": "the report benchmark script (`make bench`); not run by the tests",
    "harness.report.figures": "Figures 6 and 9; in tests/harness/report/test_build.py",
    "harness.report.layouts": "table layouts; in tests/harness/report/test_reference.py and test_claims.py",
    "harness.report.render": "output formats; in tests/harness/report/test_build.py and test_reference.py",
    "harness.report.runs": "reading runs from MLflow; in tests/harness/report/test_build.py",
    "harness.report.tables": "seed aggregation; in tests/harness/report/test_build.py and test_reference.py",
    "harness.run_inputs": "datasets and tables as MLflow shows them; in tests/e2e/test_mlflow_ui_metadata.py",
    "harness.run_model": "a run's MLflow Model; through tests/shapeprop/test_serving.py",
    "harness.stored_runs": "finished runs read back; through tests/harness/test_show.py and tests/shapeprop/test_serving.py",
    "harness.suite.positions": "YAML positions; through every located problem in tests/harness/suite/test_load.py",
    "harness.workdir": "a run's work directory; in tests/harness/test_runner_states_paths.py",
    "shapeprop.config": "the experiment config; through the suite tests (tests/harness/suite/) and test_experiment.py",
    "shapeprop.data.catalog": "the dataset registry; through every dataset test in tests/shapeprop/data/",
    "shapeprop.data.masks": "segmentations to masks; in tests/shapeprop/data/test_coco.py, test_voc.py, test_bdd100k.py",
    "shapeprop.data.records": "the dataset container and errors; through the tests in tests/shapeprop/data/",
    "shapeprop.data.source": "a suite's own dataset files; in tests/e2e/test_data_files.py",
    "shapeprop.data.stats": "`data stats`; through the CLI in tests/harness/cli/test_data.py",
    "shapeprop.data.synthetic_render": "the synthetic images; in tests/shapeprop/data/test_synthetic.py",
    "shapeprop.data.verify": "`data verify`; through the CLI in tests/harness/cli/test_data.py and tests/e2e/test_data_files.py",
    "shapeprop.engine.launch": "the launcher's rank variables (12 lines); through tests/e2e/test_ddp.py",
    "shapeprop.models.backbones": "in tests/shapeprop/models/test_build.py and test_pretrain.py",
    "shapeprop.models.d2.adapter": "the detectron2 plugin; tested as a package in tests/shapeprop/models/test_d2.py",
    "shapeprop.models.d2.backbone": "the detectron2 plugin; tested as a package in tests/shapeprop/models/test_d2.py",
    "shapeprop.models.d2.config": "the detectron2 plugin; tested as a package in tests/shapeprop/models/test_d2.py",
    "shapeprop.models.d2.mapper": "the detectron2 plugin; tested as a package in tests/shapeprop/models/test_d2.py",
    "shapeprop.models.d2.mask": "the detectron2 plugin; tested as a package in tests/shapeprop/models/test_d2.py",
    "shapeprop.models.d2.retinamask": "the detectron2 plugin; tested as a package in tests/shapeprop/models/test_d2.py",
    "shapeprop.models.d2.roi_heads": "the detectron2 plugin; tested as a package in tests/shapeprop/models/test_d2.py",
    "shapeprop.models.d2.train_net": "the detectron2 plugin; tested as a package in tests/shapeprop/models/test_d2.py",
    "shapeprop.models.labels": "label conventions; through tests/shapeprop/models/test_mask_branch.py",
    "shapeprop.models.mask_rcnn": "built and trained through build_detector in tests/shapeprop/models/test_build.py",
    "shapeprop.models.mask_transfer": "Mask^X R-CNN; in tests/shapeprop/models/test_build.py",
    "shapeprop.models.recipes": "backbone recipes; in tests/shapeprop/models/test_build.py, test_params.py, test_detectors.py",
    "shapeprop.models.retinamask": "built and trained through build_detector in tests/shapeprop/models/test_build.py",
    "shapeprop.models.tiny": "the tiny backbone; in tests/shapeprop/models/test_build.py and test_pretrain.py",
    "shapeprop.models.transform": "the detection transform (25 lines); through every detector test",
    "shapeprop.ops.bench": "the operator benchmark script (tools/gpu_check.py runs it on a GPU); no CPU test",
    "shapeprop.ops.reference": "the reference operator: the oracle of tests/shapeprop/ops/test_propagation.py",
    "shapeprop.timing": "device-synchronised timing (25 lines); through the training, evaluation and benchmark tests",
    "shapeprop.visualize.comparison": "tested with its package in tests/shapeprop/test_visualize.py",
    "shapeprop.visualize.detections": "tested with its package in tests/shapeprop/test_visualize.py",
    "shapeprop.visualize.geometry": "tested with its package in tests/shapeprop/test_visualize.py",
    "shapeprop.visualize.layout": "tested with its package in tests/shapeprop/test_visualize.py",
    "shapeprop.visualize.overlay": "overlays; in tests/shapeprop/test_serving.py",
    "shapeprop.visualize.panels": "tested with its package in tests/shapeprop/test_visualize.py",
    "shapeprop.visualize.predict": "the figures' detections; in tests/shapeprop/eval/test_inference.py",
    "shapeprop.visualize.views": "tested with its package in tests/shapeprop/test_visualize.py",
}


def _test_files() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


def _stands_for(test: Path, source: Path) -> bool:
    """Whether tests/<...>/test_<name>.py tests <source>/<...>/<name>.py or the package <name>/,
    where the name may go on with _<aspect>."""
    folder = source / test.parent.relative_to(TESTS / source.name)
    if not folder.is_dir():
        return False
    name = test.stem.removeprefix("test_")
    candidates = [p.stem for p in folder.glob("*.py")] + [p.name for p in folder.iterdir() if p.is_dir()]
    return any(
        (folder / f"{c}.py").is_file() or (folder / c / "__init__.py").is_file()
        for c in candidates
        if name == c or name.startswith(f"{c}_")
    )


def test_test_files_live_beside_their_module_or_in_e2e():
    misplaced = []
    for test in _test_files():
        top = test.relative_to(TESTS).parts
        if len(top) == 1:
            ok = test.name in TOP_LEVEL
        elif top[0] in MIRRORED:
            ok = _stands_for(test, MIRRORED[top[0]])
        else:
            ok = top[0] in OTHER_DIRS
        if not ok:
            misplaced.append(test.relative_to(ROOT).as_posix())
    assert misplaced == [], (
        "each test file tests the module of its name: tests/harness/suite/test_expand.py tests "
        "harness/suite/expand.py (tests/README.md); end-to-end tests go in tests/e2e/"
    )


def test_the_layout_check_maps_test_files_to_modules():
    assert _stands_for(TESTS / "harness" / "suite" / "test_expand.py", ROOT / "harness")
    assert _stands_for(TESTS / "harness" / "test_runner_states_paths.py", ROOT / "harness")
    assert _stands_for(TESTS / "shapeprop" / "test_visualize.py", ROOT / "shapeprop")  # a package
    assert not _stands_for(TESTS / "harness" / "suite" / "test_expansions.py", ROOT / "harness")
    assert not _stands_for(TESTS / "shapeprop" / "nowhere" / "test_expand.py", ROOT / "shapeprop")


def _has_test_file(module: Path) -> bool:
    folder = TESTS / module.parent.relative_to(ROOT)
    return (folder / f"test_{module.stem}.py").is_file() or any(folder.glob(f"test_{module.stem}_*.py"))


def test_every_module_has_a_test_file_or_a_reason_why_not():
    modules = {
        name: path for name, path in _modules().items() if path.name not in ("__init__.py", "__main__.py")
    }
    untested = {name for name, path in modules.items() if not _has_test_file(path)}
    assert sorted(untested - set(UNTESTED)) == [], "a new module without tests/<package>/.../test_<module>.py"
    assert sorted(set(UNTESTED) - untested) == [], "has a test file now (or is gone): take it off UNTESTED"


def test_no_test_module_imports_another():
    """Test modules share code through tests/helpers and fixtures through conftest.py files only."""
    offending = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            else:
                continue
            for name in names:
                last = name.rsplit(".", 1)[-1]
                inside_tests = name.startswith(("tests.", ".")) and not name.startswith("tests.helpers")
                if inside_tests or last.startswith("test_") or last == "conftest":
                    offending.append(f"{path.relative_to(ROOT).as_posix()}: {name}")
    assert offending == []


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_harness_module_outside_the_cli_imports_click():
    harness = ROOT / "harness"
    modules = [p for p in harness.rglob("*.py") if harness / "cli" not in p.parents]
    assert len(modules) > 20  # the walk found the library
    importers = [
        str(p.relative_to(harness))
        for p in modules
        if any(name == "click" or name.startswith("click.") for name in _imported_modules(p))
    ]
    assert importers == []
