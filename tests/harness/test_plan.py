"""Selecting runs by substring, glob or key (`--only`)."""

from __future__ import annotations

from harness.plan import select
from harness.suite import expand, load_suite
from tests.helpers.suites import ABLATIONS


def test_select_by_substring_or_glob():
    specs = expand(load_suite(ABLATIONS), "mini")
    assert len(select(specs, None)) == 15
    assert {s.row for s in select(specs, "more boxes")} == {
        "baseline + More boxes",
        "baseline + More boxes + ShapeProp",
    }
    assert {s.method for s in select(specs, "shapeprop_*")} == {"shapeprop_channel_agnostic"}
    assert select(specs, specs[4].key) == [specs[4]]
    assert len(select(specs, ["mask_rcnn", "*agnostic*"])) == 9
    assert select(specs, "no such run") == []
