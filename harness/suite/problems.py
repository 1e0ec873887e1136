"""Problems of a suite file, collected and reported together, each at its file and line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from harness.suite.positions import format_path
from harness.suite.schema import SuiteError, YamlPath

MAX_PROBLEMS_SHOWN = 12


class Problems:
    """Collects problems, each located in the file by its YAML key path."""

    def __init__(self, suite_source: str, positions: Mapping[YamlPath, tuple]):
        self.source = suite_source
        self.positions = positions
        self.lines: list[str] = []
        self._seen: set[tuple[YamlPath, str]] = set()

    def add(self, path: YamlPath, message: str, context: str = "") -> None:
        """Record a problem at `path`; the same problem at the same place is reported once."""
        if (path, message) in self._seen:
            return
        self._seen.add((path, message))
        line, source = None, self.source
        for n in range(len(path), -1, -1):  # the deepest part of the path that is in the file
            if path[:n] in self.positions:
                place = self.positions[path[:n]]  # (line, column[, file]): a third is an included file
                line, source = place[0], place[2] if len(place) > 2 else self.source
                break
        where = f"{source}:{line}" if line else source
        self.lines.append(f"{where}: {format_path(path)}: {message}{context}")

    def raise_if_any(self) -> None:
        if self.lines:
            head = "invalid suite" if len(self.lines) == 1 else f"invalid suite ({len(self.lines)} problems)"
            shown = self.lines[:MAX_PROBLEMS_SHOWN]
            if len(self.lines) > len(shown):
                shown.append(f"... and {len(self.lines) - len(shown)} more")
            raise SuiteError(head + ":\n  " + "\n  ".join(shown))


def suggest(word: Any, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
