"""The paper's targets have one home (`harness.targets`): the suite schema, the report command's
choices and the report's dispatch all follow it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from harness import targets
from harness.cli.report import report
from harness.report import build
from harness.report.layouts import TABLES
from harness.suite import SuiteError, parse_suite

SUITE = "name: t\nreproduces: {}\nrows:\n  - {{label: baseline, method: mask_rcnn}}\n"


@pytest.mark.parametrize("name", targets.REPRODUCES)
def test_a_suite_reproduces_any_target(name):
    assert parse_suite(SUITE.format(name), "t.yaml").reproduces == name


def test_a_suite_reproduces_nothing_else():
    with pytest.raises(SuiteError, match="reproduces"):
        parse_suite(SUITE.format("figure7"), "t.yaml")


def test_every_target_has_its_layout_or_its_drawing():
    tables = {t.name for t in targets.TARGETS if t.kind == "table"}
    figures = {t.name for t in targets.TARGETS if t.kind == "figure"}
    assert set(TABLES) == tables and set(build._FIGURES) == figures


@pytest.mark.parametrize(("option", "kind"), [("--table", "table"), ("--figure", "figure")])
def test_the_report_command_offers_the_targets(option, kind):
    choices = next(p for p in report.params if option in p.opts).type.choices
    assert list(choices) == targets.numbers(kind)
    result = CliRunner().invoke(report, [option, "7"])
    assert result.exit_code == 2 and "'7' is not one of" in result.output


def test_an_unknown_target_names_the_known_ones():
    with pytest.raises(ValueError, match="no figure 7: the reports cover figures 6, 9"):
        build.figure_report(7, client=None)
    with pytest.raises(ValueError, match="no table 5: the reports cover tables 1, 2, 3, 4"):
        build.table_report(5, client=None)
