"""Reading a suite file: YAML with positions, schema validation, reference checks, then every
profile expanded once so that a suite that loads is a suite that runs."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness import methods, plugins
from harness.suite.config_keys import config_key_problem, flatten_base, keys_at
from harness.suite.expand import expand
from harness.suite.include import include_profiles
from harness.suite.positions import load_yaml
from harness.suite.problems import Problems, suggest
from harness.suite.schema import Suite, SuiteError, YamlPath


def dataset_names() -> list[str]:
    """Dataset names the catalog knows (including any registered at run time)."""
    from shapeprop.data import catalog

    return catalog.names()


#: The suite files of this checkout.
SUITES_DIR = Path(__file__).resolve().parents[2] / "suites"


def find_suite_file(name_or_path: str | Path, directory: str | Path = SUITES_DIR) -> Path:
    """The suite file a name or path names: the file itself, else `<directory>/<name>.yaml` (or
    `.yml`); a `SuiteError` if neither exists."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (Path(directory) / f"{name_or_path}.yaml", Path(directory) / f"{name_or_path}.yml"):
        if candidate.is_file():
            return candidate
    raise SuiteError(
        f"{name_or_path}: no such suite file (looked for it and for {directory}/{path.stem}.yaml)"
    )


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; raise `SuiteError` naming file, line and key on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SuiteError(f"{path}: cannot read suite: {err.strerror or err}") from None
    return parse_suite(text, source=str(path))


def parse_suite(text: str, source: str = "<string>") -> Suite:
    """Validate suite YAML text (see `load_suite`)."""
    data, positions = load_yaml(text, source)
    problems = Problems(source, positions)
    if not isinstance(data, dict):
        problems.add(
            (), f"a suite must be a mapping with keys {list(_suite_keys())}, not {type(data).__name__}"
        )
        problems.raise_if_any()
    data = include_profiles(data, positions, source, problems)
    problems.raise_if_any()
    try:
        suite = Suite.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        # A missing key explained by a misspelt one next to it is reported once, as the misspelling.
        suggested = {
            tuple(e["loc"][:-1]) + (s,)
            for e in errors
            if e["type"] == "extra_forbidden"
            for s in difflib.get_close_matches(
                str(e["loc"][-1]), keys_at(Suite, e["loc"][:-1]), n=1, cutoff=0.6
            )
        }
        for e in errors:
            loc = tuple(e["loc"])
            if e["type"] == "extra_forbidden":
                valid = keys_at(Suite, loc[:-1])
                problems.add(loc, f"unknown key '{loc[-1]}'{suggest(loc[-1], valid)}")
            elif e["type"] == "missing":
                if loc not in suggested:
                    problems.add(loc, "required key is missing")
            else:
                problems.add(loc, f"{e['msg']} (got {e.get('input')!r})")
        problems.raise_if_any()
    suite._source, suite._positions = source, positions
    _load_plugins(suite, problems)
    problems.raise_if_any()
    suite = _with_dataset_paths_resolved(suite, problems)
    _check_references(suite, problems)
    _check_claims(suite, problems)
    problems.raise_if_any()
    for profile in suite.profile_names():  # every run of every profile resolves to a valid config
        expand(suite, profile)
    return suite


def _suite_keys() -> list[str]:
    return list(Suite.model_fields)


def _load_plugins(suite: Suite, problems: Problems) -> None:
    """Import the suite's plugins (module names, or .py files relative to the suite file)."""
    base = Path(suite.source).parent if suite.source != "<string>" else Path.cwd()
    for i, name in enumerate(suite.plugins):
        try:
            plugins.load(name, relative_to=base)
        except plugins.PluginError as err:
            problems.add(("plugins", i), str(err))


def _with_dataset_paths_resolved(suite: Suite, problems: Problems) -> Suite:
    """The suite with its own datasets' paths absolute (relative ones are read from the suite file's
    folder); a name taken by a registered dataset is a problem."""
    if not suite.datasets:
        return suite
    base = Path(suite.source).parent if suite.source != "<string>" else Path.cwd()
    registered = dataset_names()
    resolved = {}
    for name, entry in suite.datasets.items():
        if name in registered:
            problems.add(
                ("datasets", name), f"dataset '{name}' is registered already; give yours another name"
            )
        files = {
            split: f.model_copy(
                update={
                    k: str((base / Path(getattr(f, k)).expanduser()).resolve())
                    for k in ("annotations", "images")
                }
            )
            for split, f in entry.files.items()
        }
        resolved[name] = entry.model_copy(update={"files": files})
    out = suite.model_copy(update={"datasets": resolved})
    out._source, out._positions = suite._source, suite._positions
    return out


def _check_references(suite: Suite, problems: Problems) -> None:
    """Method names, dataset names and dotted config keys, before anything is resolved."""
    known_datasets = dataset_names() + list(suite.datasets)
    known_methods = methods.names()

    def check_method(name: Any, path: YamlPath) -> None:
        if name not in known_methods:
            problems.add(
                path,
                f"unknown method '{name}'{suggest(name, known_methods)}; known: {', '.join(known_methods)}",
            )

    def check_dataset(name: Any, path: YamlPath) -> None:
        if not isinstance(name, str) or name not in known_datasets:
            problems.add(
                path,
                f"unknown dataset '{name}'{suggest(name, known_datasets)}; known: {', '.join(known_datasets)}",
            )

    def check_overrides(overrides: Mapping[str, Any], path: YamlPath) -> None:
        for dotted, value in overrides.items():
            problem = config_key_problem(str(dotted))
            if problem:
                problems.add(path + (dotted,), problem)
            elif dotted == "data.dataset":
                check_dataset(value, path + (dotted,))

    # base: a nested partial config
    for dotted, value, ypath in flatten_base(suite.base):
        problem = config_key_problem(dotted)
        if problem:
            problems.add(ypath, problem)
        elif dotted == "data.dataset":
            check_dataset(value, ypath)

    has_method_axis = "method" in suite.axes
    if not suite.rows and not has_method_axis:
        problems.add(("rows",), "the suite has no rows and no 'method' axis: nothing to run (empty grid)")
    for i, row in enumerate(suite.rows):
        if row.method is None and not has_method_axis:
            problems.add(("rows", i), "row has no 'method' (and the suite has no 'method' axis)")
        elif row.method is not None and has_method_axis:
            problems.add(
                ("rows", i, "method"), "set the method either per row or as the 'method' axis, not both"
            )
        elif row.method is not None:
            check_method(row.method, ("rows", i, "method"))
        check_overrides(row.overrides, ("rows", i, "overrides"))
    labels = [row.label for row in suite.rows]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            problems.add(("rows", i, "label"), f"duplicate row label '{label}'")

    for axis, values in suite.axes.items():
        if not values:
            problems.add(("axes", axis), "empty axis: the grid has no runs")
        if axis == "method":
            for j, name in enumerate(values):
                check_method(name, ("axes", axis, j))
        elif axis == "seed":
            for j, value in enumerate(values):
                if not isinstance(value, int) or isinstance(value, bool):
                    problems.add(("axes", axis, j), f"a seed must be an integer, got {value!r}")
        else:
            problem = config_key_problem(axis)
            if problem:
                hint = (
                    "" if "did you mean" in problem else " (axes are dotted config keys, 'seed' or 'method')"
                )
                problems.add(("axes", axis), problem + hint)
            elif axis == "data.dataset":
                for j, name in enumerate(values):
                    check_dataset(name, ("axes", axis, j))

    for pname, profile in suite.profiles.items():
        for real, stand_in in profile.datasets.items():
            base_path = ("profiles", pname, "datasets", real)
            check_dataset(real, base_path)
            name_path = base_path + ("dataset",)  # absent where the stand-in is given by name alone
            check_dataset(stand_in.dataset, name_path if name_path in problems.positions else base_path)
            check_overrides(stand_in.overrides, base_path + ("overrides",))
        check_overrides(profile.overrides, ("profiles", pname, "overrides"))
        labels = [row.label for row in suite.rows] or list(suite.axes.get("method", []))
        for pattern, row_overrides in profile.rows.items():
            path = ("profiles", pname, "rows", pattern)
            if not any(fnmatch.fnmatchcase(str(label), str(pattern)) for label in labels):
                problems.add(
                    path,
                    f"matches no row{suggest(str(pattern), [str(x) for x in labels])}; rows: "
                    + ", ".join(repr(x) for x in labels),
                )
            check_overrides(row_overrides, path)


def _check_claims(suite: Suite, problems: Problems) -> None:
    """Claims name rows of this suite, agree with their own direction, and pair by a config key."""
    # Without rows, a run's label is its method (expand.py).
    labels = [row.label for row in suite.rows] or [str(m) for m in suite.axes.get("method", [])]
    available = ", ".join(repr(label) for label in labels)
    texts: list[str] = []
    for i, claim in enumerate(suite.claims):
        path: YamlPath = ("claims", i)
        for side in ("ours", "baseline"):
            label = getattr(claim, side)
            if label not in labels:
                problems.add(
                    path + (side,),
                    f"no row '{label}' in this suite{suggest(label, labels)}; rows: {available}",
                )
        same_metric = claim.metric is None or claim.metric.ours == claim.metric.baseline
        if claim.ours == claim.baseline and same_metric:
            problems.add(path + ("baseline",), "compares a row with itself: give two metrics in 'metric'")
        if (claim.direction == "none") != (claim.margin is not None):
            problems.add(
                path + ("margin" if claim.margin is not None else "direction",),
                "a margin goes with direction 'none' (the paper found no difference), and only with it",
            )
        if claim.paper and claim.direction != "none" and (claim.paper > 0) != (claim.direction == "higher"):
            problems.add(
                path + ("paper",),
                f"the paper's difference {claim.paper:+g} contradicts direction '{claim.direction}'",
            )
        if claim.by is not None:
            problem = (
                "runs are paired by seed already" if claim.by == "seed" else config_key_problem(claim.by)
            )
            if problem:
                problems.add(path + ("by",), problem)
        if claim.claim in texts:
            problems.add(path + ("claim",), f"duplicate claim '{claim.claim}'")
        texts.append(claim.claim)
