"""The errors the harness raises for its user to mend. Only `harness/cli/` knows click: its group
turns these into click's errors (a message, or a bad option's), so the library stays plain Python."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (a run that cannot be shown, a model that cannot be used, ...);
    the CLI prints its message and exits non-zero."""


class OptionError(UserError):
    """A value of command-line option `option` (e.g. "--device") that cannot be used here."""

    def __init__(self, message: str, option: str):
        super().__init__(message)
        self.option = option
