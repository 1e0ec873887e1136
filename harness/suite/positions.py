"""YAML with positions: the parsed data plus the (line, column) of every key and list item."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from harness.suite.schema import SuiteError, YamlPath


def load_yaml(text: str, source: str) -> tuple[Any, dict[YamlPath, tuple[int, int]]]:
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
                    raise SuiteError(
                        f"{source}:{mark(key_node)[0]}: {format_path(path)}: a key must be a scalar"
                    )
                if key in out:
                    line = mark(key_node)[0]
                    raise SuiteError(f"{source}:{line}: {format_path(path + (key,))}: duplicate key")
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


def format_path(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "." in str(part) or " " in str(part):  # a dotted config key inside the YAML path
            out += f"['{part}']"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top level>"
