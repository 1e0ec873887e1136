"""Shared profiles: `profiles: {mini: {include: profiles/mini.yaml, ...}}` in a suite file.

The included file holds a profile (datasets, overrides, seeds, rows) that several suites share,
so one recipe serves them all. Its path is relative to the suite file. The suite's own entries
win over the included ones, key by key (an override, a dataset stand-in, a row pattern; `seeds`
as a whole). Problems in the included file are reported at its own file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.suite.positions import load_yaml
from harness.suite.problems import Problems, suggest
from harness.suite.schema import Profile, SuiteError, YamlPath

MERGED = ("datasets", "overrides", "rows")  # mappings merged key by key


def include_profiles(
    data: dict[str, Any], positions: dict[YamlPath, tuple], source: str, problems: Problems
) -> dict[str, Any]:
    """`data` with every profile's `include` merged in; `positions` gains the included keys'
    places (line, column, file). Unreadable or malformed includes are added to `problems`."""
    profiles = data.get("profiles")
    if not isinstance(profiles, dict):
        return data
    merged_profiles = dict(profiles)
    for name, profile in profiles.items():
        if not isinstance(profile, dict) or "include" not in profile:
            continue
        where: YamlPath = ("profiles", name, "include")
        included = _read(profile["include"], source, where, problems)
        if included is None:
            continue
        shared, shared_positions, path = included
        merged = dict(shared)
        for key, value in profile.items():
            if key in MERGED and isinstance(value, dict) and isinstance(shared.get(key), dict):
                merged[key] = {**shared[key], **value}
            else:
                merged[key] = value
        merged_profiles[name] = merged
        for key_path, (line, column) in shared_positions.items():
            positions.setdefault(("profiles", name) + key_path, (line, column, path))
    return {**data, "profiles": merged_profiles}


def _read(
    include: Any, source: str, where: YamlPath, problems: Problems
) -> tuple[dict[str, Any], dict[YamlPath, tuple[int, int]], str] | None:
    """The included profile (data, positions, its path as written in messages), or None."""
    if not isinstance(include, str) or not include:
        problems.add(where, f"include must be a file path relative to the suite, got {include!r}")
        return None
    path = (Path(source).parent / include) if source != "<string>" else Path(include)
    try:
        text = path.read_text()
    except OSError as err:
        siblings = sorted(p.name for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        problems.add(where, f"cannot read {path}: {err.strerror or err}{suggest(path.name, siblings)}")
        return None
    try:
        shared, shared_positions = load_yaml(text, str(path))
    except SuiteError as err:
        problems.add(where, f"included file is not valid YAML: {err}")
        return None
    if not isinstance(shared, dict):
        keys = [key for key in Profile.model_fields if key != "include"]
        problems.add(where, f"{path} must hold a profile: a mapping with keys {keys}")
        return None
    if "include" in shared:
        line = shared_positions[("include",)][0]
        problems.add(where, f"{path}:{line}: an included profile cannot include another")
        return None
    # unknown keys are found by the suite's validation, at their line in this file
    return shared, shared_positions, str(path)
