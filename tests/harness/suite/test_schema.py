"""The suite file's schema: a profile's seeds, claims naming rows by their labels."""

from __future__ import annotations

import pytest

from harness.suite import SuiteError, expand, load_suite
from tests.helpers.suites import write


def test_a_profile_may_have_a_single_seed(tmp_path):
    path = write(
        tmp_path,
        """
        name: one-seed
        rows: [{label: a, method: mask_rcnn}]
        axes: {seed: [0, 1, 2]}
        profiles:
          mini: {seeds: [7]}
          none: {seeds: []}
        """,
    )
    with pytest.raises(SuiteError, match=r":6: profiles.none.seeds: List should have at least 1 item"):
        load_suite(path)
    path.write_text(path.read_text().replace("  none: {seeds: []}\n", ""))
    assert [s.seed for s in expand(load_suite(path), "mini")] == [7]


def test_claims_name_rows_by_their_labels(tmp_path):
    # any row label is a valid side of a claim, however short
    path = write(
        tmp_path,
        """
        name: claims
        rows: [{label: a, method: mask_rcnn}, {label: b, method: shapeprop}]
        claims:
          - {claim: Table 4, ours: b, baseline: a, direction: higher, paper: 1.5, by: data.data_fraction}
        """,
    )
    (claim,) = load_suite(path).claims
    assert (claim.ours, claim.baseline, claim.by) == ("b", "a", "data.data_fraction")
