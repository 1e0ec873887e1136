"""Plugins: a user's module that adds datasets, methods, detectors or backbones to the registries.

A plugin is a Python module whose import registers its entries (`shapeprop.data.catalog.register`,
`harness.methods.register`, the detector and backbone registries of `shapeprop.models`); everything
it registers is recorded as the plugin's (`shapeprop.registry.registering_as`), so errors and
clashes name it. A plugin is named in one of three ways:

- an entry point of an installed package in the group `shapeprop_bench.plugins` (loaded in every
  process by `load_all`; the entry point may name a module, or a callable that registers);
- `plugins:` in a suite file (module names, or `.py` files relative to the suite);
- `--plugin` on the command line.

Plugins named explicitly are recorded in `$SHAPEPROP_PLUGINS`, which the run's worker processes
(local or on Slurm) inherit and load before they run anything.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from shapeprop.registry import registering_as

ENTRY_POINT_GROUP = "shapeprop_bench.plugins"
ENV = "SHAPEPROP_PLUGINS"  # os.pathsep-separated plugin names or .py paths, for worker processes

_loaded: list[str] = []  # every plugin this process loaded (entry points by label)
_explicit: list[str] = []  # those named by a suite or --plugin: what worker processes load again


class PluginError(ValueError):
    """A plugin that cannot be loaded; the message names the plugin, and the file and line at fault."""


def _where(err: BaseException) -> str:
    """' (file:line)' of the innermost frame of the error, where the plugin went wrong."""
    frames = traceback.extract_tb(err.__traceback__)
    if isinstance(err, SyntaxError) and err.filename:
        return f" ({err.filename}:{err.lineno})"
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _target(name: str, relative_to: str | Path | None) -> str:
    """What loads plugin `name` in any process: a .py file's absolute path; a module name, with
    `@<folder>` when it is not importable as it is but sits in `relative_to` (a suite's folder)."""
    base = Path(relative_to or Path.cwd())
    if name.endswith(".py"):
        path = Path(name).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())
    top = name.split(".")[0]
    if "@" not in name and importlib.util.find_spec(top) is None:
        if (base / top / "__init__.py").is_file() or (base / f"{top}.py").is_file():
            return f"{name}@{base.resolve()}"
    return name


def load(name: str, relative_to: str | Path | None = None) -> None:
    """Import plugin `name` once per process, and record it for worker processes: a module name (also
    found in `relative_to`, a suite's folder), or a `.py` file (relative to `relative_to` if not
    absolute). Raises `PluginError` naming it."""
    target = _target(name, relative_to)
    if target in _loaded:
        return
    module, _, folder = target.partition("@")
    if folder and folder not in sys.path:
        sys.path.append(folder)
    with registering_as(f"plugin '{name}'"):
        try:
            if target.endswith(".py"):
                if not Path(target).is_file():
                    raise PluginError(f"plugin '{name}': no such file {target}")
                module_name = f"shapeprop_plugin_{Path(target).stem}"
                spec = importlib.util.spec_from_file_location(module_name, target)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(module)
        except PluginError:
            raise
        except ModuleNotFoundError as err:
            if err.name and module.startswith(err.name):
                raise PluginError(
                    f"plugin '{name}': no module named '{err.name}' (install the package that provides it, "
                    "or give the plugin as a .py file)"
                ) from err
            raise PluginError(f"plugin '{name}': {type(err).__name__}: {err}{_where(err)}") from err
        except Exception as err:
            raise PluginError(f"plugin '{name}': {type(err).__name__}: {err}{_where(err)}") from err
    _loaded.append(target)
    _explicit.append(target)
    os.environ[ENV] = os.pathsep.join(_explicit)


def load_entry_points() -> None:
    """Load every plugin installed under the entry-point group `shapeprop_bench.plugins`."""
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        label = f"entry point '{ep.name}' ({ep.value})"
        if label in _loaded:
            continue
        with registering_as(f"plugin '{ep.name}'"):
            try:
                obj = ep.load()
                if callable(obj):  # a register function; a module registers as it is imported
                    obj()
            except Exception as err:
                raise PluginError(f"plugin {label}: {type(err).__name__}: {err}{_where(err)}") from err
        _loaded.append(label)


def load_all() -> None:
    """The installed plugins (entry points), then those named in `$SHAPEPROP_PLUGINS`."""
    load_entry_points()
    for name in filter(None, os.environ.get(ENV, "").split(os.pathsep)):
        load(name)


def loaded() -> list[str]:
    """The plugins this process has loaded, in order (entry points by name and value)."""
    return list(_loaded)
