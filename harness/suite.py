"""Suites: YAML files that expand into fully resolved, hashed run specs.

A suite names a paper table or figure, a partial base config, rows (label + method +
overrides), grid axes and profiles (`full`, `mini`). `load_suite` parses and validates a
file; every problem is reported with the file, line and key path, and a misspelt key gets
the closest valid key as a suggestion. `expand` resolves every run in the documented order:

    defaults -> base -> method -> row overrides -> axis values -> profile (dataset stand-in,
    profile overrides, then the stand-in's own overrides)

and hashes each resolved config (plus the suite name) into a stable run key.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import itertools
import json
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from harness import methods
from shapeprop.config import ExperimentConfig

YamlPath = tuple[Any, ...]

REPRODUCES = ("table1", "table2", "table3", "table4", "figure6", "figure9")
MAX_PROBLEMS_SHOWN = 12


class SuiteError(ValueError):
    """A suite file that cannot be used; the message names file, line, key path and problem."""


# --------------------------------------------------------------------------- schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetMapping(_Strict):
    """A real dataset's stand-in in a profile, with overrides that apply only where it is used.

    They are applied after the profile's overrides, so they win over them.
    """

    dataset: str
    overrides: dict[str, Any] = Field(default_factory=dict)


class Profile(_Strict):
    """How a profile changes every run: datasets mapped to stand-ins, then dotted overrides.

    Profile overrides never switch on a section that is null in a run (e.g. `model.shapeprop.*`
    leaves runs without ShapeProp unchanged), so one profile can shrink every method.
    """

    datasets: dict[str, str | DatasetMapping] = Field(default_factory=dict)
    overrides: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] | None = Field(
        None, min_length=1, description="replaces the suite's seed axis under this profile"
    )


class Row(_Strict):
    label: str = Field(min_length=1)
    method: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)


class Suite(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    reproduces: Literal[REPRODUCES] | None = None  # type: ignore[valid-type]
    base: dict[str, Any] = Field(default_factory=dict)
    rows: list[Row] = Field(default_factory=list)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    profiles: dict[str, Profile] = Field(default_factory=dict)

    # Where the suite came from (set by `parse_suite`, not part of the YAML).
    _source: str = PrivateAttr("<string>")
    _positions: dict[YamlPath, tuple[int, int]] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> str:
        """The file the suite was read from."""
        return self._source

    @property
    def positions(self) -> dict[YamlPath, tuple[int, int]]:
        """(line, column) of every key and list item of the file, by key path."""
        return self._positions

    def profile_names(self) -> list[str]:
        """`full` always exists (the base as written); other profiles only when the file has them."""
        return ["full"] + [p for p in self.profiles if p != "full"]


@dataclass(frozen=True)
class RunSpec:
    """One fully resolved run of a suite."""

    suite: str
    reproduces: str | None
    row: str
    method: str
    profile: str
    seed: int
    config: ExperimentConfig
    key: str
    axes: dict[str, Any] = field(default_factory=dict)  # this run's axis values (dotted key -> value)

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.axes.items() if k not in ("seed", "method"))
        return f"{self.row} [{self.method}, seed {self.seed}{', ' + extra if extra else ''}]"


# --------------------------------------------------------------------------- YAML with positions


def _load_yaml(text: str, source: str) -> tuple[Any, dict[YamlPath, tuple[int, int]]]:
    """Parse YAML, recording (line, column) of every key and list item by its key path."""
    positions: dict[YamlPath, tuple[int, int]] = {}
    loader = yaml.SafeLoader(text)

    def mark(node: yaml.Node) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def build(node: yaml.Node, path: YamlPath) -> Any:
        if isinstance(node, yaml.MappingNode):
            loader.flatten_mapping(node)  # YAML merge keys (<<)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise SuiteError(f"{source}:{mark(key_node)[0]}: {_fmt(path)}: a key must be a scalar")
                if key in out:
                    line = mark(key_node)[0]
                    raise SuiteError(f"{source}:{line}: {_fmt(path + (key,))}: duplicate key")
                positions[path + (key,)] = mark(key_node)
                out[key] = build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                positions[path + (i,)] = mark(item)
                items.append(build(item, path + (i,)))
            return items
        return loader.construct_object(node, deep=True)

    try:
        root = loader.get_single_node()
        data = build(root, ()) if root is not None else None
    except yaml.MarkedYAMLError as err:
        where = err.problem_mark or err.context_mark
        line = f":{where.line + 1}" if where else ""
        raise SuiteError(f"{source}{line}: malformed YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise SuiteError(f"{source}: malformed YAML: {err}") from None
    finally:
        loader.dispose()
    return data, positions


def _fmt(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "." in str(part) or " " in str(part):  # a dotted config key inside the YAML path
            out += f"['{part}']"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top level>"


# --------------------------------------------------------------------------- error reporting


class _Problems:
    """Collects problems, each located in the file by its YAML key path."""

    def __init__(self, suite_source: str, positions: Mapping[YamlPath, tuple[int, int]]):
        self.source = suite_source
        self.positions = positions
        self.lines: list[str] = []
        self._seen: set[tuple[YamlPath, str]] = set()

    def add(self, path: YamlPath, message: str, context: str = "") -> None:
        """Record a problem at `path`; the same problem at the same place is reported once."""
        if (path, message) in self._seen:
            return
        self._seen.add((path, message))
        line = None
        for n in range(len(path), -1, -1):  # the deepest part of the path that is in the file
            if path[:n] in self.positions:
                line = self.positions[path[:n]][0]
                break
        where = f"{self.source}:{line}" if line else self.source
        self.lines.append(f"{where}: {_fmt(path)}: {message}{context}")

    def raise_if_any(self) -> None:
        if self.lines:
            head = "invalid suite" if len(self.lines) == 1 else f"invalid suite ({len(self.lines)} problems)"
            shown = self.lines[:MAX_PROBLEMS_SHOWN]
            if len(self.lines) > len(shown):
                shown.append(f"... and {len(self.lines) - len(shown)} more")
            raise SuiteError(head + ":\n  " + "\n  ".join(shown))


def _suggest(word: Any, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# --------------------------------------------------------------------------- schema walking


def _unwrap(annotation: Any) -> Any:
    """The model/dict/list inside Optional[...] / Union[...], if any."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
        for arg in args:
            if typing.get_origin(arg) in (dict, list):
                return arg
        return args[0] if len(args) == 1 else annotation
    return annotation


def _type_at(model: Any, path: Iterable[Any]) -> Any:
    """The annotation reached by following `path` through models, dicts and lists (None: invalid)."""
    current = model
    for part in path:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(part) if isinstance(part, str) else None
            if info is None:
                return None
            current = info.annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        elif typing.get_origin(current) is list:
            current = typing.get_args(current)[0]
        else:
            return Any
    return current


def _keys_at(model: Any, path: Iterable[Any]) -> list[str]:
    target = _unwrap(_type_at(model, path))
    if isinstance(target, type) and issubclass(target, BaseModel):
        return list(target.model_fields)
    return []


def _is_model(annotation: Any) -> bool:
    target = _unwrap(annotation)
    return isinstance(target, type) and issubclass(target, BaseModel)


def config_key_problem(dotted: str) -> str | None:
    """Why `dotted` is not a key of `ExperimentConfig` (None when it is one)."""
    parts = dotted.split(".")
    current: Any = ExperimentConfig
    for i, part in enumerate(parts):
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            if part not in current.model_fields:
                prefix = ".".join(parts[:i])
                options = [f"{prefix}.{k}" if prefix else k for k in current.model_fields]
                full_options = [o for o in _all_config_keys() if o.endswith("." + part)]
                hint = _suggest(".".join(parts[: i + 1]), options) or (
                    f" (did you mean '{full_options[0]}'?)" if len(full_options) == 1 else ""
                )
                return f"unknown config key '{dotted}'{hint}"
            current = current.model_fields[part].annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return f"'{'.'.join(parts[:i])}' is a value, not a section: cannot set '{dotted}'"
    return None


def _all_config_keys() -> list[str]:
    out: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            out.append(prefix + name)
            target = _unwrap(info.annotation)
            if isinstance(target, type) and issubclass(target, BaseModel):
                walk(target, prefix + name + ".")

    walk(ExperimentConfig, "")
    return out


def dataset_names() -> list[str]:
    """Dataset names the catalog knows (including any registered at run time)."""
    from shapeprop.data import catalog

    return catalog.names()


# --------------------------------------------------------------------------- loading


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
    data, positions = _load_yaml(text, source)
    problems = _Problems(source, positions)
    if not isinstance(data, dict):
        problems.add(
            (), f"a suite must be a mapping with keys {list(_suite_keys())}, not {type(data).__name__}"
        )
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
                str(e["loc"][-1]), _keys_at(Suite, e["loc"][:-1]), n=1, cutoff=0.6
            )
        }
        for e in errors:
            loc = tuple(e["loc"])
            if e["type"] == "extra_forbidden":
                valid = _keys_at(Suite, loc[:-1])
                problems.add(loc, f"unknown key '{loc[-1]}'{_suggest(loc[-1], valid)}")
            elif e["type"] == "missing":
                if loc not in suggested:
                    problems.add(loc, "required key is missing")
            else:
                problems.add(loc, f"{e['msg']} (got {e.get('input')!r})")
        problems.raise_if_any()
    suite._source, suite._positions = source, positions
    _check_references(suite, problems)
    problems.raise_if_any()
    for profile in suite.profile_names():  # every run of every profile resolves to a valid config
        expand(suite, profile)
    return suite


def _suite_keys() -> list[str]:
    return list(Suite.model_fields)


def _check_references(suite: Suite, problems: _Problems) -> None:
    """Method names, dataset names and dotted config keys, before anything is resolved."""
    known_datasets = dataset_names()
    known_methods = methods.names()

    def check_method(name: Any, path: YamlPath) -> None:
        if name not in known_methods:
            problems.add(
                path,
                f"unknown method '{name}'{_suggest(name, known_methods)}; known: {', '.join(known_methods)}",
            )

    def check_dataset(name: Any, path: YamlPath) -> None:
        if not isinstance(name, str) or name not in known_datasets:
            problems.add(
                path,
                f"unknown dataset '{name}'{_suggest(name, known_datasets)}; known: {', '.join(known_datasets)}",
            )

    def check_overrides(overrides: Mapping[str, Any], path: YamlPath) -> None:
        for dotted, value in overrides.items():
            problem = config_key_problem(str(dotted))
            if problem:
                problems.add(path + (dotted,), problem)
            elif dotted == "data.dataset":
                check_dataset(value, path + (dotted,))

    # base: a nested partial config
    for dotted, value, ypath in _flatten_base(suite.base):
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
            if isinstance(stand_in, DatasetMapping):
                check_dataset(stand_in.dataset, base_path + ("dataset",))
                check_overrides(stand_in.overrides, base_path + ("overrides",))
            else:
                check_dataset(stand_in, base_path)
        check_overrides(profile.overrides, ("profiles", pname, "overrides"))


def _flatten_base(base: Mapping[str, Any]) -> Iterator[tuple[str, Any, YamlPath]]:
    """Leaves of the nested base config as dotted keys; sections (sub-models) are merged, not replaced."""

    def walk(node: Mapping[str, Any], prefix: tuple[str, ...]) -> Iterator[tuple[str, Any, YamlPath]]:
        for key, value in node.items():
            path = prefix + (str(key),)
            annotation = _type_at(ExperimentConfig, path)
            if isinstance(value, dict) and annotation is not None and _is_model(annotation):
                yield from walk(value, path)
            else:
                yield ".".join(path), value, ("base",) + path

    yield from walk(base, ())


# --------------------------------------------------------------------------- expansion


class _Resolving:
    """A nested config dict being resolved, remembering which YAML location set each key."""

    def __init__(self) -> None:
        self.cfg: dict[str, Any] = ExperimentConfig().model_dump(mode="json")
        self.origin: dict[str, YamlPath] = {}

    def get(self, dotted: str) -> Any:
        node: Any = self.cfg
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def set(self, dotted: str, value: Any, where: YamlPath, enable_sections: bool = True) -> None:
        """Set a dotted key; `enable_sections=False` skips keys under a null section instead."""
        parts = dotted.split(".")
        node = self.cfg
        for part in parts[:-1]:
            if node.get(part) is None:
                if not enable_sections:
                    return
                # An empty section: validation fills its defaults (and a ShapeProp preset its fields).
                node[part] = {}
            node = node[part]
        node[parts[-1]] = _plain(value)
        self.origin = {k: v for k, v in self.origin.items() if not k.startswith(dotted + ".")}
        self.origin[dotted] = where

    def locate(self, loc: tuple[Any, ...]) -> YamlPath | None:
        """The YAML path that set the config value at pydantic error location `loc`."""
        for n in range(len(loc), 0, -1):
            dotted = ".".join(str(p) for p in loc[:n])
            if dotted in self.origin:
                return self.origin[dotted] + tuple(loc[n:])
        return None


def _plain(value: Any) -> Any:
    """A deep copy of a YAML value, so runs never share mutable state."""
    return json.loads(json.dumps(value))


def run_key(suite_name: str, config: ExperimentConfig) -> str:
    """Stable hash of the resolved config plus the suite name (16 hex digits)."""
    payload = json.dumps(
        {"suite": suite_name, "config": config.model_dump(mode="json")}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _profile_shapeprop(
    suite: Suite, prof: Profile, stand_in: DatasetMapping | None, overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The ShapeProp settings the suite's base, this profile (and stand-in) and the command line's
    overrides give a ShapeProp row."""
    probe = _Resolving()
    for dotted, value, ypath in _flatten_base(suite.base):
        probe.set(dotted, value, ypath)
    if probe.get("model.shapeprop") is None:
        probe.set("model.shapeprop", {}, ())
    layers = [prof.overrides, stand_in.overrides if stand_in else {}, overrides or {}]
    for dotted, value in (item for layer in layers for item in layer.items()):
        if dotted.startswith("model.shapeprop."):
            probe.set(dotted, value, (), enable_sections=False)
    return probe.cfg["model"]["shapeprop"]


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items as {dotted config key: value}, each value read as YAML (`16`, `true`,
    `null`, `[1, 2]`, `detectron2`). Raises SuiteError naming every bad item (unknown keys get a
    did-you-mean suggestion)."""
    out: dict[str, Any] = {}
    problems = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--set {item!r}: expected KEY=VALUE, e.g. --set model.framework=detectron2")
            continue
        problem = config_key_problem(key)
        if problem is not None:
            problems.append(f"--set {item!r}: {problem}")
            continue
        try:
            out[key] = yaml.safe_load(text)
        except yaml.YAMLError as err:
            problems.append(f"--set {item!r}: the value is not valid YAML: {err}")
    if problems:
        raise SuiteError("invalid --set:\n  " + "\n  ".join(problems))
    return out


def expand(suite: Suite, profile: str = "full", overrides: Mapping[str, Any] | None = None) -> list[RunSpec]:
    """Every run of `suite` under `profile`, fully resolved and keyed, in a stable order.

    `overrides` ({dotted key: value}, `parse_overrides`) apply last, after the profile's, and like
    them never switch on a section that is null in a run (`model.shapeprop.*` leaves plain rows be).
    """
    if profile not in suite.profile_names():
        raise SuiteError(
            f"{suite.source}: suite '{suite.name}' has no profile '{profile}'; "
            f"available: {', '.join(suite.profile_names())}"
        )
    prof = suite.profiles.get(profile, Profile())
    problems = _Problems(suite.source, suite.positions)
    rows = suite.rows or [Row(label="-")]
    axes = dict(suite.axes)
    if prof.seeds is not None:
        axes["seed"] = prof.seeds
    axis_names = list(axes)
    combos = list(itertools.product(*(axes[a] for a in axis_names))) if axis_names else [()]

    specs: list[RunSpec] = []
    seen: dict[str, str] = {}
    for i, row in enumerate(rows):
        row_path: YamlPath = ("rows", i) if suite.rows else ("axes",)
        for combo in combos:
            values = dict(zip(axis_names, combo, strict=True))
            r = _Resolving()
            for dotted, value, ypath in _flatten_base(suite.base):
                r.set(dotted, value, ypath)
            if "method" in values:
                method_name = values["method"]
                method_path: YamlPath = ("axes", "method", suite.axes["method"].index(method_name))
            else:
                method_name, method_path = row.method, row_path + ("method",)
            method = methods.get(method_name)
            for dotted, value in method.patch(r.cfg).items():
                r.set(dotted, value, method_path)
            for dotted, value in row.overrides.items():
                r.set(dotted, value, row_path + ("overrides", dotted))
            for axis, value in values.items():
                if axis == "seed" and prof.seeds is not None:
                    where: YamlPath = ("profiles", profile, "seeds", prof.seeds.index(value))
                else:
                    where = ("axes", axis, suite.axes[axis].index(value))
                if axis == "seed":
                    r.set("seed", value, where)
                elif axis != "method":
                    r.set(axis, value, where)
            dataset = r.get("data.dataset")
            stand_in = prof.datasets.get(dataset)
            if isinstance(stand_in, str):
                stand_in = DatasetMapping(dataset=stand_in)
            stand_in_path = ("profiles", profile, "datasets", dataset)
            if stand_in is not None:
                r.set("data.dataset", stand_in.dataset, stand_in_path)
                r.set("data.root", None, stand_in_path)  # the real dataset's root does not hold the stand-in
            for dotted, value in prof.overrides.items():
                r.set(dotted, value, ("profiles", profile, "overrides", dotted), enable_sections=False)
            if stand_in is not None:
                # Last: a stand-in's overrides are the most specific (e.g. the longer schedule of a
                # larger set) and win over the profile-wide ones.
                for dotted, value in stand_in.overrides.items():
                    r.set(dotted, value, stand_in_path + ("overrides", dotted), enable_sections=False)
            for dotted, value in (overrides or {}).items():
                r.set(dotted, value, ("--set", dotted), enable_sections=False)
            finalize = method.finalize(r.cfg, _profile_shapeprop(suite, prof, stand_in, overrides))
            for dotted, value in finalize.items():  # e.g. widths that depend on the backbone
                r.set(dotted, value, method_path)

            label = row.label if suite.rows else method_name
            try:
                config = ExperimentConfig.model_validate(r.cfg)
            except ValidationError as err:
                for e in err.errors():
                    loc = tuple(e["loc"])
                    ypath = r.locate(loc) or row_path
                    dotted = ".".join(str(p) for p in loc)
                    if e["type"] == "extra_forbidden":
                        valid = _keys_at(ExperimentConfig, loc[:-1])
                        msg = f"unknown config key '{dotted}'{_suggest(loc[-1], valid)}"
                    else:
                        msg = f"{dotted}: {e['msg']} (got {e.get('input')!r})"
                    problems.add(ypath, msg, context=f" [profile {profile}, run '{label}']")
                continue
            key = run_key(suite.name, config)
            spec = RunSpec(
                suite=suite.name,
                reproduces=suite.reproduces,
                row=label,
                method=method_name,
                profile=profile,
                seed=config.seed,
                config=config,
                key=key,
                axes=values,
            )
            if key in seen:
                problems.add(
                    method_path if "method" in values else row_path,
                    f"run '{spec.describe()}' resolves to the same config as '{seen[key]}' "
                    f"(key {key}) under profile {profile}",
                )
                continue
            seen[key] = spec.describe()
            specs.append(spec)
    problems.raise_if_any()
    return specs


def select(specs: Iterable[RunSpec], only: Iterable[str] | str | None) -> list[RunSpec]:
    """Runs matching any filter: a glob (with * ? [) or a case-insensitive substring of row label, method or key."""
    filters = [only] if isinstance(only, str) else list(only or [])
    if not filters:
        return list(specs)

    def matches(spec: RunSpec, pattern: str) -> bool:
        fields = (spec.row, spec.method, spec.key)
        if any(ch in pattern for ch in "*?["):
            return any(fnmatch.fnmatchcase(f.lower(), pattern.lower()) for f in fields)
        return any(pattern.lower() in f.lower() for f in fields)

    return [s for s in specs if any(matches(s, f) for f in filters)]


def resolve_suite_path(name_or_path: str | Path, search_dir: str | Path = "suites") -> Path:
    """A suite argument as a path: the file itself, or `suites/<name>.yaml` for a bare name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (Path(search_dir) / f"{name_or_path}.yaml", Path(search_dir) / f"{name_or_path}.yml"):
        if candidate.is_file():
            return candidate
    raise SuiteError(
        f"{name_or_path}: no such suite file (looked for it and for {search_dir}/{path.stem}.yaml)"
    )


def param_value(value: Any) -> str:
    """A config value as `flatten_config` writes it (MLflow params): lists and dicts as JSON."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "None" if value is None else str(value)


def flatten_config(config: ExperimentConfig) -> dict[str, str]:
    """The resolved config as dotted keys -> strings (MLflow params; lists/dicts as JSON)."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str, annotation: Any) -> None:
        if isinstance(node, dict) and _is_model(annotation):
            model = _unwrap(annotation)
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else key, model.model_fields[key].annotation)
        else:
            out[prefix] = param_value(node)

    walk(config.model_dump(mode="json"), "", ExperimentConfig)
    return out
