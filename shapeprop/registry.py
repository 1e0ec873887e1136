"""Named registries: one per kind of thing a suite may name (datasets, methods, detectors, backbones).

Each kind has exactly one `Registry`, defined beside what it registers (`shapeprop.data.catalog`,
`harness.methods`, `shapeprop.models.detectors`, `shapeprop.models.recipes`); plugins add to them
(`harness.plugins`). A lookup of an unknown name raises `UnknownName` (a `KeyError` and a
`ValueError`, so pydantic validators and dict-style callers both report it) naming the kind, the
closest known name and the known ones. Registering records who registered the entry, so a clash
between two plugins names both.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

BUILTIN = "shapeprop"
# Who is registering now: a plugin's name while `harness.plugins` imports it, else the built-ins.
_SOURCE: contextvars.ContextVar[str] = contextvars.ContextVar("registry_source", default=BUILTIN)


@contextlib.contextmanager
def registering_as(source: str) -> Iterator[None]:
    """Entries registered inside the block are recorded as `source`'s (a plugin's name)."""
    token = _SOURCE.set(source)
    try:
        yield
    finally:
        _SOURCE.reset(token)


def did_you_mean(word: object, choices: list[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class UnknownName(KeyError, ValueError):
    def __init__(self, kind: str, name: object, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} '{name}'{did_you_mean(name, known)}; known: {', '.join(known)}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> entry, in registration order, for one `kind` ("dataset", "method", ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._sources: dict[str, str] = {}

    def register(self, name: str, entry: T, *, source: str | None = None, replace: bool = False) -> T:
        """Add `entry` as `name`; `source` names who adds it (default: the plugin being loaded, see
        `registering_as`). A name taken already is an error naming both sources, unless `replace`."""
        source = source or _SOURCE.get()
        if not isinstance(name, str) or not name:
            raise ValueError(f"{source}: a {self.kind} needs a non-empty string name, got {name!r}")
        if name in self._entries and not replace:
            raise ValueError(f"{source}: {self.kind} '{name}' is already registered by {self._sources[name]}")
        self._entries[name] = entry
        self._sources[name] = source
        return entry

    def decorator(self, name: str, *, source: str | None = None) -> Callable[[T], T]:
        """`@registry.decorator("name")` registers the decorated object."""
        return lambda entry: self.register(name, entry, source=source)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownName(self.kind, name, self.names()) from None

    def check(self, name: str) -> str:
        """`name` if registered, else `UnknownName` (for validators)."""
        self.get(name)
        return name

    def source(self, name: str) -> str:
        """Who registered `name` (`BUILTIN` for the built-ins, else the plugin's name)."""
        self.get(name)
        return self._sources[name]

    def unregister(self, name: str) -> None:
        self.get(name)
        del self._entries[name], self._sources[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())
