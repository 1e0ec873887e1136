"""One function finds a suite file by name or path, for the CLI and the claims report alike."""

from __future__ import annotations

import pytest

from harness.report.claims import claim_suites
from harness.suite import SuiteError, find_suite_file


def test_a_name_is_looked_up_in_the_folder_a_path_taken_as_is(tmp_path):
    (tmp_path / "a.yaml").write_text("")
    (tmp_path / "b.yml").write_text("")
    assert find_suite_file("a", tmp_path) == tmp_path / "a.yaml"
    assert find_suite_file("b", tmp_path) == tmp_path / "b.yml"
    assert find_suite_file(tmp_path / "b.yml", "elsewhere") == tmp_path / "b.yml"


def test_the_cli_and_the_claims_report_fail_alike_on_a_missing_suite(tmp_path):
    message = f"nope: no such suite file \\(looked for it and for {tmp_path}/nope.yaml\\)"
    with pytest.raises(SuiteError, match=message):
        find_suite_file("nope", tmp_path)
    with pytest.raises(SuiteError, match=message):
        claim_suites("nope", tmp_path)
