"""The detectron2 plugin stays optional: without detectron2 its import fails with a clear message."""

from __future__ import annotations

import sys

import pytest


def test_import_without_detectron2_names_the_fix(monkeypatch):
    plugin = ("detectron2.", "shapeprop.models.d2")
    for name in [n for n in sys.modules if n == "detectron2" or n.startswith(plugin)]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "detectron2", None)  # makes `import detectron2` raise ImportError
    with pytest.raises(ImportError, match="needs detectron2.*build it from"):
        import shapeprop.models.d2  # noqa: F401
