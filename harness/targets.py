"""The paper's tables and figures that suites reproduce: the one list that the suite schema
(`reproduces`), the `report --table/--figure` choices and the report's dispatch read.

A plain tuple rather than a `shapeprop.registry.Registry`: the targets are the paper's, fixed,
and a plugin cannot add one (a target needs a layout or renderer and the paper's numbers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Target:
    kind: Literal["table", "figure"]
    number: int

    @property
    def name(self) -> str:
        """The suite's `reproduces` value and the runs' tag, e.g. "table2"."""
        return f"{self.kind}{self.number}"


TARGETS = (
    Target("table", 1),
    Target("table", 2),
    Target("table", 3),
    Target("table", 4),
    Target("figure", 6),
    Target("figure", 9),
)
REPRODUCES = tuple(t.name for t in TARGETS)


def numbers(kind: str) -> list[str]:
    """The paper's numbers of the targets of `kind` ("table" or "figure"), as text."""
    return [str(t.number) for t in TARGETS if t.kind == kind]


def target(kind: str, number: int | str) -> Target:
    """The target `kind` `number`; a `ValueError` naming the known ones otherwise."""
    for t in TARGETS:
        if t.kind == kind and str(t.number) == str(number):
            return t
    raise ValueError(f"no {kind} {number}: the reports cover {kind}s {', '.join(numbers(kind))}")
