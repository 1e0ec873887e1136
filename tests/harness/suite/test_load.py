"""Loading a suite file: every problem reported at once, each with its file, line and key path
(and a suggestion for a misspelt key)."""

from __future__ import annotations

import pytest

from harness.report.claims import claim_suites
from harness.suite import SuiteError, expand, find_suite_file, load_suite, parse_suite
from tests.helpers.suites import ABLATIONS, error_of, write


def test_profile_row_overrides_name_no_row_or_a_bad_key_at_their_line(tmp_path):
    path = write(
        tmp_path,
        """
        name: x
        rows: [{label: baseline, method: mask_rcnn}]
        profiles:
          mini:
            rows:
              baselne: {schedule.max_steps: 5}
              "base*": {schedule.max_step: 5}
        """,
    )
    message = error_of(path)
    assert (
        f"{path}:6: profiles.mini.rows.baselne: matches no row (did you mean 'baseline'?); rows: 'baseline'"
        in message
    ), message
    assert (
        f"{path}:7: profiles.mini.rows.base*['schedule.max_step']: unknown config key" in message
        and "did you mean" in message
    ), message


BAD = {
    "malformed": (
        """
        name: x
        rows:
          - {label: a, method: mask_rcnn
        """,
        ":4: malformed YAML",
    ),
    "unknown top-level key": (
        """
        name: x
        rows: [{label: a, method: mask_rcnn}]
        profile:
          mini: {}
        """,
        ":3: profile: unknown key 'profile' (did you mean 'profiles'?)",
    ),
    "misspelt row key": (
        """
        name: x
        rows:
          - label: a
            methd: mask_rcnn
        """,
        ":4: rows[0].methd: unknown key 'methd' (did you mean 'method'?)",
    ),
    "misspelt config key in base": (
        """
        name: x
        base:
          model:
            backbon: tiny
        rows: [{label: a, method: mask_rcnn}]
        """,
        ":4: base.model.backbon: unknown config key 'model.backbon' (did you mean 'model.backbone'?)",
    ),
    "misspelt dotted override": (
        """
        name: x
        rows:
          - label: a
            method: mask_rcnn
            overrides: {schedule.max_step: 5}
        """,
        ":5: rows[0].overrides['schedule.max_step']: unknown config key 'schedule.max_step' "
        "(did you mean 'schedule.max_steps'?)",
    ),
    "wrong type of a suite key": (
        """
        name: x
        rows: [{label: a, method: mask_rcnn}]
        axes:
          seed: 3
        """,
        ":4: axes.seed: Input should be a valid list (got 3)",
    ),
    "wrong type of a config value": (
        """
        name: x
        base:
          schedule: {lr: fast}
        rows: [{label: a, method: mask_rcnn}]
        """,
        ":3: base.schedule.lr: schedule.lr: Input should be a valid number",
    ),
    "bad value from a profile": (
        """
        name: x
        rows: [{label: a, method: mask_rcnn}]
        profiles:
          mini:
            overrides:
              model.backbone: resnet5
        """,
        ":6: profiles.mini.overrides['model.backbone']: model.backbone: unknown backbone "
        "'resnet5' (did you mean 'resnet50'?); known: tiny, resnet18, resnet50, resnet101",
    ),
    "bad axis value": (
        """
        name: x
        rows: [{label: a, method: mask_rcnn}]
        axes:
          data.data_fraction:
            - 0.1
            - 2
        """,
        ":6: axes['data.data_fraction'][1]: data.data_fraction: Input should be less than or equal to 1",
    ),
    "unknown method": (
        """
        name: x
        rows:
          - {label: a, method: mask_rcnn}
          - {label: b, method: shapeprob}
        """,
        ":4: rows[1].method: unknown method 'shapeprob' (did you mean 'shapeprop'?)",
    ),
    "unknown dataset": (
        """
        name: x
        base:
          data:
            dataset: coco2017
        rows: [{label: a, method: mask_rcnn}]
        """,
        ":4: base.data.dataset: unknown dataset 'coco2017' (did you mean 'coco_2017'?)",
    ),
    "unknown dataset in a profile map": (
        """
        name: x
        rows: [{label: a, method: mask_rcnn}]
        profiles:
          mini:
            datasets: {synthetic: synthtic}
        """,
        ":5: profiles.mini.datasets.synthetic: unknown dataset 'synthtic' (did you mean 'synthetic'?)",
    ),
    "empty axis": (
        """
        name: x
        rows: [{label: a, method: mask_rcnn}]
        axes:
          seed: []
        """,
        ":4: axes.seed: empty axis: the grid has no runs",
    ),
    "no rows": (
        """
        name: x
        description: nothing to run
        """,
        "rows: the suite has no rows and no 'method' axis: nothing to run (empty grid)",
    ),
    "bad reproduces": (
        """
        name: x
        reproduces: table5
        rows: [{label: a, method: mask_rcnn}]
        """,
        ":2: reproduces: Input should be 'table1'",
    ),
    "duplicate key": (
        """
        name: x
        rows: [{label: a, method: mask_rcnn}]
        name: y
        """,
        ":3: name: duplicate key",
    ),
    "rows resolving to the same run": (
        """
        name: x
        rows:
          - {label: a, method: mask_rcnn}
          - {label: b, method: mask_rcnn, overrides: {seed: 0}}
        """,
        ":4: rows[1]: run 'b [mask_rcnn, seed 0]' resolves to the same config as 'a [mask_rcnn, seed 0]'",
    ),
}


def test_missing_profile_and_missing_file(tmp_path):
    suite = load_suite(ABLATIONS)
    with pytest.raises(SuiteError, match="has no profile 'tiny'; available: full, mini"):
        expand(suite, "tiny")
    with pytest.raises(SuiteError, match="nope.yaml: cannot read suite"):
        load_suite(tmp_path / "nope.yaml")


def test_parse_suite_reports_every_problem_at_once():
    with pytest.raises(SuiteError) as info:
        parse_suite("name: x\nrows:\n  - {label: a, method: foo}\n  - {label: b, method: bar}\n", "s.yaml")
    assert "2 problems" in str(info.value)
    assert "s.yaml:3: rows[0].method" in str(info.value) and "s.yaml:4: rows[1].method" in str(info.value)


BAD |= {
    "misspelt key in a profile": (
        """
        name: x
        rows: [{label: a, method: mask_rcnn}]
        profiles:
          mini:
            sedes: [1]
        """,
        ":5: profiles.mini.sedes: unknown key 'sedes' (did you mean 'seeds'?)",
    ),
    "misspelt required key": (  # reported as the misspelling, with no extra "missing" line
        """
        name: x
        rows:
          - labl: a
            method: mask_rcnn
        """,
        ":3: rows[0].labl: unknown key 'labl' (did you mean 'label'?)",
    ),
    "missing required key": (  # at the line of the list item that lacks it
        """
        name: x
        rows:
          - method: mask_rcnn
        """,
        ":3: rows[0].label: required key is missing",
    ),
    "row without a method": (
        """
        name: x
        rows:
          - label: a
        """,
        ":3: rows[0]: row has no 'method'",
    ),
    "method in a row and as an axis": (
        """
        name: x
        rows:
          - label: a
            method: mask_rcnn
        axes:
          method: [shapeprop]
        """,
        ":4: rows[0].method: set the method either per row or as the 'method' axis, not both",
    ),
    "duplicate row label": (
        """
        name: x
        rows:
          - {label: a, method: mask_rcnn}
          - label: a
            method: shapeprop
        """,
        ":4: rows[1].label: duplicate row label 'a'",
    ),
    "unknown method in the method axis": (
        """
        name: x
        axes:
          method:
            - mask_rcnn
            - shapeprob
        """,
        ":5: axes.method[1]: unknown method 'shapeprob' (did you mean 'shapeprop'?)",
    ),
    "seed axis value not an integer": (
        """
        name: x
        rows: [{label: a, method: mask_rcnn}]
        axes:
          seed:
            - 0
            - true
        """,
        ":6: axes.seed[1]: a seed must be an integer, got True",
    ),
    "unknown axis": (  # no close key: say what an axis can be
        """
        name: x
        rows: [{label: a, method: mask_rcnn}]
        axes:
          learning_rate: [0.1]
        """,
        ":4: axes.learning_rate: unknown config key 'learning_rate' (axes are dotted config keys, "
        "'seed' or 'method')",
    ),
    "unknown dataset in the dataset axis": (
        """
        name: x
        rows: [{label: a, method: mask_rcnn}]
        axes:
          data.dataset:
            - synthetic
            - coco2017
        """,
        ":6: axes['data.dataset'][1]: unknown dataset 'coco2017' (did you mean 'coco_2017'?)",
    ),
    "misspelt key inside a section given as a value": (
        """
        name: x
        rows:
          - label: a
            method: shapeprop
            overrides:
              model.shapeprop: {latent_channel: 8}
        """,
        ":6: rows[0].overrides['model.shapeprop'].latent_channel: unknown config key "
        "'model.shapeprop.latent_channel' (did you mean 'latent_channels'?)",
    ),
    "bad top-level config value in a row": (
        """
        name: x
        rows:
          - label: a
            method: mask_rcnn
            overrides:
              seed: abc
        """,
        ":6: rows[0].overrides.seed: seed: Input should be a valid integer",
    ),
    "bad list item in a row override": (
        """
        name: x
        rows:
          - label: a
            method: mask_rcnn
            overrides:
              schedule.milestones:
                - 10
                - soon
        """,
        ":8: rows[0].overrides['schedule.milestones'][1]: schedule.milestones.1: Input should be a valid integer",
    ),
    "section set to null": (
        """
        name: x
        base:
          data: null
        rows: [{label: a, method: mask_rcnn}]
        """,
        ":3: base.data: data: Input should be a valid dictionary",
    ),
    "mapping given for a plain value": (
        """
        name: x
        base:
          model:
            backbone: {name: tiny}
        rows: [{label: a, method: mask_rcnn}]
        """,
        ":4: base.model.backbone: model.backbone: Input should be a valid string (got {'name': 'tiny'})",
    ),
    "YAML syntax error": (  # the parser's own words say what is wrong
        """
        name: x
        rows: [{label: a, method: mask_rcnn}]
        description: a: b
        """,
        ":3: malformed YAML: mapping values are not allowed here",
    ),
    "key that is not a scalar": (
        """
        name: x
        rows: [{label: a, method: mask_rcnn}]
        axes:
          [seed]: [0]
        """,
        ":4: axes: a key must be a scalar",
    ),
    "claim naming a row that is not there": (
        """
        name: x
        rows: [{label: baseline, method: mask_rcnn}, {label: ours, method: shapeprop}]
        claims:
          - claim: Table 4
            ours: ours
            baseline: baselne
            direction: higher
        """,
        ":6: claims[0].baseline: no row 'baselne' in this suite (did you mean 'baseline'?); "
        "rows: 'baseline', 'ours'",
    ),
    "claim comparing a row with itself": (
        """
        name: x
        rows: [{label: a, method: mask_rcnn}]
        claims:
          - claim: Table 4
            ours: a
            baseline: a
            direction: higher
        """,
        ":6: claims[0].baseline: compares a row with itself: give two metrics in 'metric'",
    ),
    "claim whose paper difference contradicts its direction": (
        """
        name: x
        rows: [{label: a, method: mask_rcnn}, {label: b, method: shapeprop}]
        claims:
          - claim: Table 4
            ours: b
            baseline: a
            direction: higher
            paper: -1.5
        """,
        ":8: claims[0].paper: the paper's difference -1.5 contradicts direction 'higher'",
    ),
    "claim paired by seed": (
        """
        name: x
        rows: [{label: a, method: mask_rcnn}, {label: b, method: shapeprop}]
        claims:
          - claim: Table 4
            ours: b
            baseline: a
            direction: higher
            by: seed
        """,
        ":8: claims[0].by: runs are paired by seed already",
    ),
    "duplicate claim": (
        """
        name: x
        rows: [{label: a, method: mask_rcnn}, {label: b, method: shapeprop}]
        claims:
          - {claim: Table 4, ours: b, baseline: a, direction: higher}
          - claim: Table 4
            ours: a
            baseline: b
            direction: lower
        """,
        ":5: claims[1].claim: duplicate claim 'Table 4'",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_suite_fails_with_file_line_and_key(tmp_path, case):
    text, expected = BAD[case]
    path = write(tmp_path, text, name="bad.yaml")
    message = error_of(path)
    assert f"{path}{expected}" in message if expected.startswith(":") else expected in message, message


def test_a_misspelt_required_key_is_one_problem_not_two(tmp_path):
    # the "missing" error that the misspelling explains is not reported besides it
    message = error_of(write(tmp_path, "name: x\nrows:\n  - labl: a\n    method: mask_rcnn\n"))
    assert message.startswith("invalid suite:\n") and "required key is missing" not in message, message


def test_a_misspelt_key_in_a_dataset_stand_in_is_reported_at_its_line(tmp_path):
    # one problem, at the stand-in's line, with the key's path (no pydantic union tag) and the fix
    path = write(
        tmp_path,
        """
        name: x
        rows: [{label: a, method: mask_rcnn}]
        profiles:
          mini:
            datasets:
              synthetic: {dataset: synthetic, overides: {}}
        """,
    )
    message = error_of(path)
    assert message.startswith("invalid suite:\n"), message
    assert (
        f"{path}:6: profiles.mini.datasets.synthetic.overides: unknown key 'overides' "
        "(did you mean 'overrides'?)" in message
    ), message


def test_a_section_given_a_value_in_the_base_is_reported_at_its_line(tmp_path):
    # `model: tiny` where a section belongs: a suite error at the base's line, not a TypeError from
    # the method's settings being written into the string
    path = write(tmp_path, "name: x\nbase: {model: tiny}\nrows: [{label: a, method: mask_rcnn}]\n")
    message = error_of(path)
    assert f"{path}:2: base.model: " in message and "dictionary" in message, message


def test_every_failing_run_and_every_duplicate_is_reported(tmp_path):
    # each bad axis value is its own problem, not only the first run's
    message = error_of(
        write(
            tmp_path, "name: x\nrows: [{label: a, method: mask_rcnn}]\naxes:\n  data.data_fraction: [2, 3]\n"
        )
    )
    assert "2 problems" in message, message
    assert "(got 2)" in message and "(got 3)" in message
    # each run of a row that repeats another row is named, for every seed
    message = error_of(
        write(
            tmp_path,
            "name: x\nrows: [{label: a, method: mask_rcnn}, {label: b, method: mask_rcnn}]\naxes: {seed: [0, 1]}\n",
        )
    )
    assert "2 problems" in message, message
    assert "'b [mask_rcnn, seed 0]' resolves to the same config as 'a [mask_rcnn, seed 0]'" in message
    assert "'b [mask_rcnn, seed 1]' resolves to the same config as 'a [mask_rcnn, seed 1]'" in message


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
