"""The experiment config's schema as the suite sees it: dotted keys, their types, and checks."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Union

from pydantic import BaseModel

from harness.suite.problems import suggest
from harness.suite.schema import YamlPath
from shapeprop.config import ExperimentConfig


def unwrap(annotation: Any) -> Any:
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


def type_at(model: Any, path: Iterable[Any]) -> Any:
    """The annotation reached by following `path` through models, dicts and lists (None: invalid)."""
    current = model
    for part in path:
        current = unwrap(current)
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


def keys_at(model: Any, path: Iterable[Any]) -> list[str]:
    target = unwrap(type_at(model, path))
    if isinstance(target, type) and issubclass(target, BaseModel):
        return list(target.model_fields)
    return []


def is_model(annotation: Any) -> bool:
    target = unwrap(annotation)
    return isinstance(target, type) and issubclass(target, BaseModel)


def config_key_problem(dotted: str) -> str | None:
    """Why `dotted` is not a key of `ExperimentConfig` (None when it is one)."""
    parts = dotted.split(".")
    current: Any = ExperimentConfig
    for i, part in enumerate(parts):
        current = unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            if part not in current.model_fields:
                prefix = ".".join(parts[:i])
                options = [f"{prefix}.{k}" if prefix else k for k in current.model_fields]
                full_options = [o for o in _all_config_keys() if o.endswith("." + part)]
                hint = suggest(".".join(parts[: i + 1]), options) or (
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
            target = unwrap(info.annotation)
            if isinstance(target, type) and issubclass(target, BaseModel):
                walk(target, prefix + name + ".")

    walk(ExperimentConfig, "")
    return out


def flatten_base(base: Mapping[str, Any]) -> Iterator[tuple[str, Any, YamlPath]]:
    """Leaves of the nested base config as dotted keys; sections (sub-models) are merged, not replaced."""

    def walk(node: Mapping[str, Any], prefix: tuple[str, ...]) -> Iterator[tuple[str, Any, YamlPath]]:
        for key, value in node.items():
            path = prefix + (str(key),)
            annotation = type_at(ExperimentConfig, path)
            if isinstance(value, dict) and annotation is not None and is_model(annotation):
                yield from walk(value, path)
            else:
                yield ".".join(path), value, ("base",) + path

    yield from walk(base, ())
