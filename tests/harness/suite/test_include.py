"""Shared profiles (harness/suite/include.py): one recipe file included by several suites."""

from __future__ import annotations

import textwrap

from harness.suite import expand, load_suite
from tests.helpers.suites import error_of, write

SHARED = """
# the recipe every suite's mini profile shares
seeds: [0, 1]
datasets: {coco_2017: {dataset: synthetic, overrides: {data.options.num_images: 12}}}
overrides:
  schedule.max_steps: 10
  schedule.lr: 0.5
  data.min_size: 64
rows:
  "*ShapeProp*": {schedule.max_steps: 30}
"""

SUITE = """
name: shared
base: {data: {dataset: coco_2017}}
rows:
  - {label: baseline, method: mask_rcnn}
  - {label: ShapeProp, method: shapeprop}
profiles:
  mini:
    include: {include}
    overrides: {schedule.lr: 0.25}
"""


def test_an_included_profile_expands_as_if_written_inline_and_the_suite_wins(tmp_path):
    write(tmp_path / "profiles", SHARED, "mini.yaml")
    included = load_suite(write(tmp_path, SUITE.replace("{include}", "profiles/mini.yaml"), "a.yaml"))
    inline = SUITE.split("profiles:")[0] + textwrap.dedent("""
        profiles:
          mini:
            seeds: [0, 1]
            datasets: {coco_2017: {dataset: synthetic, overrides: {data.options.num_images: 12}}}
            overrides: {schedule.max_steps: 10, schedule.lr: 0.25, data.min_size: 64}
            rows: {"*ShapeProp*": {schedule.max_steps: 30}}
        """)
    written = load_suite(write(tmp_path, inline, "b.yaml"))
    runs = {(s.row, s.seed): s for s in expand(included, "mini")}
    assert {(s.row, s.seed): s.config for s in expand(written, "mini")} == {
        k: s.config for k, s in runs.items()
    }
    assert sorted(runs) == [("ShapeProp", 0), ("ShapeProp", 1), ("baseline", 0), ("baseline", 1)]
    baseline, shapeprop = runs[("baseline", 0)].config, runs[("ShapeProp", 0)].config
    assert baseline.schedule.lr == 0.25  # the suite's own override wins
    assert (baseline.schedule.max_steps, shapeprop.schedule.max_steps) == (10, 30)  # the shared rows
    assert baseline.data.options == {"num_images": 12} and baseline.data.min_size == 64


def test_a_bad_key_in_the_included_file_is_reported_at_its_own_line(tmp_path):
    shared = write(tmp_path, SHARED.replace("schedule.lr: 0.5", "schedule.lrr: 0.5"), "shared.yaml")
    message = error_of(write(tmp_path, SUITE.replace("{include}", "shared.yaml"), "suite.yaml"))
    assert f"{shared}:6: profiles.mini.overrides['schedule.lrr']: unknown config key" in message, message


def test_an_unknown_profile_key_in_the_included_file_is_reported_at_its_own_line(tmp_path):
    shared = write(tmp_path, SHARED.replace("seeds:", "sedes:"), "shared.yaml")
    message = error_of(write(tmp_path, SUITE.replace("{include}", "shared.yaml"), "suite.yaml"))
    assert f"{shared}:2: profiles.mini.sedes: unknown key 'sedes' (did you mean 'seeds'?)" in message, message


def test_a_missing_include_names_the_suite_line_and_the_closest_file(tmp_path):
    write(tmp_path, SHARED, "mini.yaml")
    suite = write(tmp_path, SUITE.replace("{include}", "mnii.yaml"), "suite.yaml")
    message = error_of(suite)
    assert f"{suite}:8: profiles.mini.include: cannot read {tmp_path / 'mnii.yaml'}" in message, message
    assert "(did you mean 'mini.yaml'?)" in message


def test_an_included_profile_cannot_include_another(tmp_path):
    write(tmp_path, "include: other.yaml\n" + SHARED, "shared.yaml")
    message = error_of(write(tmp_path, SUITE.replace("{include}", "shared.yaml"), "suite.yaml"))
    assert "shared.yaml:1: an included profile cannot include another" in message, message
