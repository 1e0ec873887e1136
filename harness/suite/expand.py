"""Expansion: a suite and a profile into fully resolved, keyed runs, in the documented order

defaults -> base -> method -> row overrides -> axis values -> profile (dataset stand-in,
profile overrides, the stand-in's own overrides, then the profile's overrides of the row) ->
--set overrides -> method finalize
"""

from __future__ import annotations

import fnmatch
import itertools
import json
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from harness import methods
from harness.suite.config_keys import config_key_problem, flatten_base, keys_at
from harness.suite.keys import run_key
from harness.suite.problems import Problems, suggest
from harness.suite.schema import DatasetMapping, Profile, Row, RunSpec, Suite, SuiteError, YamlPath
from shapeprop.config import ExperimentConfig
from shapeprop.registry import BUILTIN


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
            elif not isinstance(node[part], dict):
                return  # a value where a section belongs: validation reports it where it was set
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


def _profile_shapeprop(
    suite: Suite, prof: Profile, stand_in: DatasetMapping | None, overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The ShapeProp settings the suite's base, this profile (and stand-in) and the command line's
    overrides give a ShapeProp row."""
    probe = _Resolving()
    for dotted, value, ypath in flatten_base(suite.base):
        probe.set(dotted, value, ypath)
    if probe.get("model.shapeprop") is None:
        probe.set("model.shapeprop", {}, ())
    layers = [prof.overrides, stand_in.overrides if stand_in else {}, overrides or {}]
    for dotted, value in (item for layer in layers for item in layer.items()):
        if dotted.startswith("model.shapeprop."):
            probe.set(dotted, value, (), enable_sections=False)
    shapeprop = probe.get("model.shapeprop")
    return {} if shapeprop is None else shapeprop  # None: `model` is not a section; validation says so


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
    problems = Problems(suite.source, suite.positions)
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
            for dotted, value, ypath in flatten_base(suite.base):
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
            stand_in_path = ("profiles", profile, "datasets", dataset)
            if stand_in is not None:
                r.set("data.dataset", stand_in.dataset, stand_in_path)
                # the real dataset's root (or files) does not hold the stand-in
                for key in ("data.root", "data.files", "data.class_groups"):
                    r.set(key, None, stand_in_path)
            for dotted, value in prof.overrides.items():
                r.set(dotted, value, ("profiles", profile, "overrides", dotted), enable_sections=False)
            if stand_in is not None:
                # Last: a stand-in's overrides are the most specific (e.g. the longer schedule of a
                # larger set) and win over the profile-wide ones.
                for dotted, value in stand_in.overrides.items():
                    r.set(dotted, value, stand_in_path + ("overrides", dotted), enable_sections=False)
            label = row.label if suite.rows else method_name
            for pattern, row_overrides in prof.rows.items():
                if fnmatch.fnmatchcase(label, pattern):
                    for dotted, value in row_overrides.items():
                        where = ("profiles", profile, "rows", pattern, dotted)
                        r.set(dotted, value, where, enable_sections=False)
            for dotted, value in (overrides or {}).items():
                r.set(dotted, value, ("--set", dotted), enable_sections=False)
            finalize = method.finalize(r.cfg, _profile_shapeprop(suite, prof, stand_in, overrides))
            for dotted, value in finalize.items():  # e.g. widths that depend on the backbone
                r.set(dotted, value, method_path)

            own = suite.datasets.get(r.get("data.dataset"))
            if own is not None and r.get("data.files") is None:  # a dataset of the suite's own
                where = ("datasets", r.get("data.dataset"))
                r.set("data.files", own.model_dump(mode="json")["files"], where + ("files",))
                r.set("data.class_groups", own.class_groups, where + ("class_groups",))
            try:
                config = ExperimentConfig.model_validate(r.cfg)
            except ValidationError as err:
                for e in err.errors():
                    loc = tuple(e["loc"])
                    ypath = r.locate(loc) or row_path
                    dotted = ".".join(str(p) for p in loc)
                    if e["type"] == "extra_forbidden":
                        valid = keys_at(ExperimentConfig, loc[:-1])
                        msg = f"unknown config key '{dotted}'{suggest(loc[-1], valid)}"
                    else:
                        # a validator's own message (e.g. an unknown registry name) without pydantic's prefix
                        text = e["msg"].removeprefix("Value error, ")
                        msg = f"{dotted}: {text} (got {e.get('input')!r})"
                    if ypath == method_path and methods.METHODS.source(method_name) != BUILTIN:
                        msg += f" (set by method '{method_name}' of {methods.METHODS.source(method_name)})"
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


def profile_seeds(suite: Suite, profile: str) -> list[int]:
    """The seeds a profile runs: its own `seeds`, else the suite's seed axis (else seed 0)."""
    chosen = suite.profiles.get(profile)
    if chosen is not None and chosen.seeds is not None:
        return list(chosen.seeds)
    return list(suite.axes.get("seed", [0]))


def with_seeds(suite: Suite, profile: str, count: int) -> Suite:
    """`suite` with its profile's seeds extended to `count` (the existing ones first, then the next)."""
    seeds = profile_seeds(suite, profile)
    seeds += [max(seeds) + 1 + i for i in range(count - len(seeds))]
    chosen = suite.profiles.get(profile)
    if chosen is not None and chosen.seeds is not None:
        profiles = {**suite.profiles, profile: chosen.model_copy(update={"seeds": seeds})}
        return suite.model_copy(update={"profiles": profiles})
    return suite.model_copy(update={"axes": {**suite.axes, "seed": seeds}})
