"""A long list of problems says how many are not shown."""

from __future__ import annotations

import pytest

from harness.suite import SuiteError, parse_suite


def test_long_problem_lists_say_how_many_are_not_shown():
    from harness.suite.problems import MAX_PROBLEMS_SHOWN

    extra = 3
    rows = "".join(f"  - {{label: r{i}, method: nope{i}}}\n" for i in range(MAX_PROBLEMS_SHOWN + extra))
    with pytest.raises(SuiteError) as info:
        parse_suite("name: x\nrows:\n" + rows, "s.yaml")
    text = str(info.value)
    assert f"({MAX_PROBLEMS_SHOWN + extra} problems)" in text
    assert text.count("unknown method") == MAX_PROBLEMS_SHOWN
    assert text.endswith(f"... and {extra} more")
    # a short list is shown whole, with no "more" line
    with pytest.raises(SuiteError) as info:
        parse_suite("name: x\nrows:\n  - {label: a, method: nope}\n", "s.yaml")
    assert "... and" not in str(info.value)
