"""Suites: YAML validation with file/line/key errors, expansion order, counts and key stability."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import methods
from harness.plan import select
from harness.run_tags import flatten_config
from harness.suite import SuiteError, expand, load_suite, parse_overrides, parse_suite, run_key
from shapeprop.config import ExperimentConfig

SUITES = Path(__file__).parent / "suites"
ABLATIONS = SUITES / "ablations_like.yaml"


def write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def error_of(path: Path) -> str:
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    return str(info.value)


# --------------------------------------------------------------------------- expansion


def test_expansion_counts_and_unique_keys():
    suite = load_suite(ABLATIONS)
    assert suite.profile_names() == ["full", "mini"]
    for profile in ("full", "mini"):
        specs = expand(suite, profile)
        assert len(specs) == 5 * 3  # rows x seeds
        assert len({s.key for s in specs}) == len(specs)
        assert [s.seed for s in specs[:3]] == [0, 1, 2]
        assert {s.profile for s in specs} == {profile}
        assert {s.reproduces for s in specs} == {"table4"}
    full, mini = expand(suite, "full"), expand(suite, "mini")
    assert not {s.key for s in full} & {s.key for s in mini}


def test_keys_are_stable_across_loads_and_processes():
    keys = [s.key for s in expand(load_suite(ABLATIONS), "mini")]
    assert keys == [s.key for s in expand(load_suite(ABLATIONS), "mini")]
    code = (
        "from harness.suite import load_suite, expand;"
        f"print(' '.join(s.key for s in expand(load_suite({str(ABLATIONS)!r}), 'mini')))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123"},
    )
    assert other.stdout.split() == keys


def test_key_is_the_config_and_the_suite_name():
    spec = expand(load_suite(ABLATIONS), "mini")[0]
    assert spec.key == run_key("test-ablations", spec.config)
    assert run_key("other-suite", spec.config) != spec.key
    changed = spec.config.model_copy(update={"seed": spec.config.seed + 100})
    assert run_key("test-ablations", changed) != spec.key


def test_profile_seeds_replace_the_seed_axis(tmp_path):
    path = write(
        tmp_path,
        """
        name: seeds
        rows: [{label: a, method: mask_rcnn}]
        axes:
          data.data_fraction: [0.1, 0.5]
          seed: [0]
        profiles:
          full: {}
          mini: {seeds: [0, 1, 2], overrides: {schedule.max_steps: 10}}
        """,
    )
    suite = load_suite(path)
    assert [s.seed for s in expand(suite, "full")] == [0, 0]
    mini = expand(suite, "mini")
    assert [(s.config.data.data_fraction, s.seed) for s in mini] == [
        (f, seed) for f in (0.1, 0.5) for seed in (0, 1, 2)
    ]
    assert len({s.key for s in mini}) == 6


def test_profile_row_overrides_apply_to_the_matched_rows_last(tmp_path):
    path = write(
        tmp_path,
        """
        name: rows
        base: {data: {dataset: coco_2017}}
        rows:
          - {label: "set | Mask R-CNN", method: mask_rcnn}
          - {label: "set | RetinaMask", method: retinamask}
          - {label: "set | RetinaMask w/ ShapeProp", method: retinamask_shapeprop}
        profiles:
          full: {}
          mini:
            datasets: {coco_2017: {dataset: synthetic, overrides: {schedule.max_steps: 20}}}
            overrides: {schedule.max_steps: 10, schedule.lr: 0.5}
            rows:
              "*| RetinaMask*": {schedule.max_steps: 30}
              "set | RetinaMask w/ ShapeProp": {schedule.lr: 0.25}
        """,
    )
    suite = load_suite(path)
    mini = {s.row: s for s in expand(suite, "mini")}
    steps = {row: s.config.schedule.max_steps for row, s in mini.items()}
    # the row overrides win over the profile's and the stand-in's, and reach only the matched rows
    assert steps == {"set | Mask R-CNN": 20, "set | RetinaMask": 30, "set | RetinaMask w/ ShapeProp": 30}
    assert [mini[r].config.schedule.lr for r in mini] == [0.5, 0.5, 0.25]
    assert {s.config.schedule.max_steps for s in expand(suite, "full")} == {
        ExperimentConfig().schedule.max_steps
    }
    # a row the overrides leave alone keeps its key
    text = path.read_text().replace('"*| RetinaMask*"', '"*| RetinaMask"')
    narrower = {s.row: s.key for s in expand(load_suite(write(tmp_path, text, "narrower.yaml")), "mini")}
    assert narrower["set | Mask R-CNN"] == mini["set | Mask R-CNN"].key
    assert narrower["set | RetinaMask"] == mini["set | RetinaMask"].key
    assert narrower["set | RetinaMask w/ ShapeProp"] != mini["set | RetinaMask w/ ShapeProp"].key


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


def test_resolution_order_base_method_row_axis_profile():
    suite = load_suite(ABLATIONS)
    full = {(s.row, s.seed): s.config for s in expand(suite, "full")}
    mini = {(s.row, s.seed): s.config for s in expand(suite, "mini")}

    base = full[("baseline", 1)]
    assert base.seed == 1 and base.model.shapeprop is None
    assert base.schedule.lr == 0.01 and base.schedule.max_steps == 90000  # base, then full profile
    assert base.data.dataset == "bdd100k_ins_seg" and base.data.root == "/datasets/bdd100k"

    agnostic = full[("baseline + ShapeProp (Channel-agnostic)", 0)]
    assert agnostic.model.shapeprop is not None and agnostic.model.shapeprop.channel_agnostic
    assert not full[("baseline + ShapeProp", 0)].model.shapeprop.channel_agnostic
    assert full[("baseline + More boxes", 0)].data.dataset == "bdd100k_fused"  # row override after method

    # mini: datasets mapped (root dropped), profile overrides, then the stand-in's own overrides
    m_base = mini[("baseline", 0)]
    assert m_base.data.dataset == "synthetic" and m_base.data.root is None
    assert m_base.data.data_fraction == 0.1 and m_base.data.masks.kind == "all"
    assert m_base.model.backbone == "tiny" and m_base.schedule.max_steps == 1000
    assert m_base.model.shapeprop is None  # a profile override never switches ShapeProp on
    m_sp = mini[("baseline + ShapeProp", 0)]
    assert m_sp.model.shapeprop.latent_channels == 8
    fused = mini[("baseline + More boxes + ShapeProp", 2)]
    assert fused.data.masks.kind == "image_fraction" and fused.data.masks.fraction == 0.1
    assert fused.data.data_fraction == 1.0
    assert fused.schedule.max_steps == 9570  # the stand-in's override wins over the profile's 1000
    assert fused.model.backbone == "tiny"  # profile overrides still apply to the stand-in's runs
    assert fused.schedule.lr == 0.01  # base values survive every layer that does not set them


def test_axis_values_override_rows_and_method_axis_labels(tmp_path):
    path = write(
        tmp_path,
        """
        name: grid
        reproduces: figure6
        base: {model: {backbone: tiny}, data: {min_size: 64, max_size: 64}}
        axes:
          method: [mask_rcnn, shapeprop]
          data.data_fraction: [0.1, 0.02, 0.01]
          seed: [0, 1]
        profiles:
          mini: {overrides: {schedule.max_steps: 10}}
        """,
    )
    specs = expand(load_suite(path), "mini")
    assert len(specs) == 2 * 3 * 2
    assert {s.row for s in specs} == {"mask_rcnn", "shapeprop"}
    assert {s.config.data.data_fraction for s in specs} == {0.1, 0.02, 0.01}
    assert specs[0].axes == {"method": "mask_rcnn", "data.data_fraction": 0.1, "seed": 0}
    assert all((s.config.model.shapeprop is not None) == (s.method == "shapeprop") for s in specs)

    path = write(
        tmp_path,
        """
        name: order
        rows:
          - {label: a, method: shapeprop, overrides: {data.min_size: 96, model.shapeprop.channel_agnostic: true}}
        axes:
          data.min_size: [64, 128]
        """,
    )
    specs = expand(load_suite(path))
    assert [s.config.data.min_size for s in specs] == [64, 128]  # axis after row override
    assert all(s.config.model.shapeprop.channel_agnostic for s in specs)  # row override after method


def test_every_method_resolves_and_patches_the_config():
    from shapeprop.config import ExperimentConfig

    for name in methods.names():
        if name == "more_head_params":
            continue  # needs the detector library (tested below)
        cfg = ExperimentConfig(data={"masks": {"kind": "categories", "classes": "voc"}}).model_dump(
            mode="json"
        )
        patched = ExperimentConfig.model_validate(_apply(cfg, methods.get(name).patch(cfg)))
        assert patched.model.arch == ("retinamask" if name.startswith("retinamask") else "mask_rcnn")
        assert (patched.model.shapeprop is not None) == ("shapeprop" in name), name
        pseudo = {"box_masks": "box", "grabcut": "grabcut", "progressive": "progressive"}
        assert patched.model.pseudo_masks == pseudo.get(name, "none")
        assert patched.model.mask_transfer == (name == "maskx")
        assert patched.data.masks.kind == ("all" if name == "oracle" else "categories")


def _apply(cfg: dict, patch: dict) -> dict:
    for dotted, value in patch.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return cfg


def test_more_head_params_widens_the_mask_head_to_shapeprops_count(tmp_path):
    from shapeprop.config import ModelConfig, ShapePropConfig
    from shapeprop.data.synthetic import CLASSES
    from shapeprop.models.params import widened_mask_head_channels
    from shapeprop.models.recipes import recipe

    path = write(
        tmp_path,
        """
        name: heads
        base: {model: {backbone: resnet50, class_agnostic_masks: true}, data: {dataset: coco_2017}}
        rows: [{label: base, method: mask_rcnn}, {label: wide, method: more_head_params}]
        profiles:
          mini: {datasets: {coco_2017: synthetic}, overrides: {model.backbone: tiny}}
        """,
    )
    base, wide = expand(load_suite(path), "mini")
    assert base.config.model.mask_head_channels is None
    # the width is computed after the profile: for the tiny backbone and the synthetic classes
    tiny = ModelConfig(backbone="tiny", class_agnostic_masks=True, shapeprop=ShapePropConfig())
    assert wide.config.model.mask_head_channels == widened_mask_head_channels(tiny, len(CLASSES))
    assert wide.config.model.mask_head_channels > recipe("tiny").mask_head_channels
    assert wide.config.model.shapeprop is None


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


def test_flattened_config_has_dotted_keys():
    spec = expand(load_suite(ABLATIONS), "mini")[3]
    flat = flatten_config(spec.config)
    assert flat["model.backbone"] == "tiny"
    assert flat["model.shapeprop.latent_channels"] == "8"
    assert flat["data.masks.kind"] == "all"
    assert flat["schedule.milestones"] == "[60000, 80000]"
    assert flat["seed"] == "0"


# --------------------------------------------------------------------------- bad input


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


def test_set_overrides_apply_last_and_are_validated(tmp_path):
    from harness.suite import parse_overrides

    path = write(
        tmp_path,
        """
        name: sets
        base: {model: {backbone: tiny}, schedule: {max_steps: 100}}
        rows: [{label: plain, method: mask_rcnn}, {label: sp, method: shapeprop}]
        profiles:
          mini: {overrides: {schedule.max_steps: 10, model.shapeprop.latent_channels: 8}}
        """,
    )
    sets = parse_overrides(
        [
            "model.framework=detectron2",
            "schedule.max_steps=3",
            "schedule.milestones=[1, 2]",
            "model.shapeprop.preset=light",
        ]
    )
    assert sets == {
        "model.framework": "detectron2",
        "schedule.max_steps": 3,
        "schedule.milestones": [1, 2],
        "model.shapeprop.preset": "light",
    }
    plain, sp = expand(load_suite(path), "mini", sets)
    assert plain.config.model.framework == sp.config.model.framework == "detectron2"
    assert plain.config.schedule.max_steps == 3  # after the profile's 10
    assert plain.config.model.shapeprop is None  # a section stays off where the row has none
    assert (sp.config.model.shapeprop.preset, sp.config.model.shapeprop.latent_channels) == ("light", 8)
    assert {s.key for s in expand(load_suite(path), "mini")}.isdisjoint(
        {plain.key, sp.key}
    )  # new configs, new keys

    with pytest.raises(SuiteError) as err:
        parse_overrides(["model.framwork=detectron2", "schedule.max_steps", "data.min_size=[oops"])
    text = str(err.value)
    assert "did you mean 'model.framework'" in text
    assert "'schedule.max_steps': expected KEY=VALUE" in text
    assert "not valid YAML" in text
    with pytest.raises(SuiteError, match=r"--set.*schedule\.max_steps.*integer"):
        expand(load_suite(path), "mini", parse_overrides(["schedule.max_steps=many"]))


def test_plan_command_takes_set(tmp_path):
    from click.testing import CliRunner

    from harness.cli import main

    path = write(
        tmp_path,
        """
        name: sets
        base: {model: {backbone: tiny}}
        rows: [{label: plain, method: mask_rcnn}]
        """,
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    plain = CliRunner().invoke(main, ["plan", str(path), "--tracking-uri", uri])
    changed = CliRunner().invoke(
        main, ["plan", str(path), "--tracking-uri", uri, "--set", "schedule.max_steps=7"]
    )
    assert plain.exit_code == changed.exit_code == 0, plain.output + changed.output
    assert "│ 7 " in changed.output and "│ 7 " not in plain.output  # the steps column
    bad = CliRunner().invoke(main, ["plan", str(path), "--tracking-uri", uri, "--set", "model.backbon=tiny"])
    assert bad.exit_code != 0 and "did you mean 'model.backbone'" in bad.output


# --------------------------------------------------------------------------- more bad input (issue 22)
# Each case: the file's line and key path where the problem is, and the part of the message that
# says what is wrong or how to fix it.

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


# --------------------------------------------------------------------------- --set keys (config_keys)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        # a misspelt section: the suggestion is for the part that is wrong
        ("modl.backbone=tiny", "unknown config key 'modl.backbone' (did you mean 'model'?)"),
        # a key given without its section: the one full key that ends with it
        ("backbone=tiny", "unknown config key 'backbone' (did you mean 'model.backbone'?)"),
        (
            "latent_channels=8",
            "unknown config key 'latent_channels' (did you mean 'model.shapeprop.latent_channels'?)",
        ),
        # a key below a plain value
        (
            "data.dataset.name=coco",
            "'data.dataset' is a value, not a section: cannot set 'data.dataset.name'",
        ),
        ("seed.offset=1", "'seed' is a value, not a section: cannot set 'seed.offset'"),
    ],
)
def test_set_names_a_bad_key_and_the_fix(item, expected):
    with pytest.raises(SuiteError) as info:
        parse_overrides([item])
    assert f"--set {item!r}: {expected}" in str(info.value)


def test_set_of_an_ambiguous_key_guesses_nothing():
    # two full keys end with it (model.mask_head_channels, model.sizes.mask_head_channels): no guess
    with pytest.raises(SuiteError) as info:
        parse_overrides(["mask_head_channels=8"])
    assert "unknown config key 'mask_head_channels'" in str(info.value)
    assert "did you mean" not in str(info.value)


# --------------------------------------------------------------------------- sections, seeds, claims


def test_only_base_and_row_overrides_switch_a_null_section_on(tmp_path):
    path = write(
        tmp_path,
        """
        name: sections
        base: {model: {backbone: tiny, shapeprop: null}, data: {dataset: coco_2017}}
        rows:
          - {label: plain, method: mask_rcnn}
          - {label: sized, method: mask_rcnn, overrides: {model.sizes.box_head_channels: 64}}
          - {label: sp, method: shapeprop}
        profiles:
          mini:
            datasets:
              coco_2017:
                dataset: synthetic
                overrides: {model.shapeprop.latent_channels: 8, model.sizes.box_head_channels: 32}
        """,
    )
    suite = load_suite(path)
    full = {s.row: s.config.model for s in expand(suite, "full")}
    assert full["plain"].sizes is None and full["plain"].shapeprop is None  # a null section in the base
    assert full["sized"].sizes.box_head_channels == 64  # a row override switches the section on
    mini = {s.row: s.config.model for s in expand(suite, "mini")}
    # a stand-in's overrides, like the profile's, set a section only where the run has it
    assert mini["plain"].sizes is None and mini["plain"].shapeprop is None
    assert mini["sized"].sizes.box_head_channels == 32
    assert mini["sp"].shapeprop.latent_channels == 8 and mini["sp"].sizes is None


def test_more_head_params_matches_the_shapeprop_head_of_the_base(tmp_path):
    from shapeprop.config import ModelConfig, ShapePropConfig
    from shapeprop.data.synthetic import CLASSES
    from shapeprop.models.params import widened_mask_head_channels

    path = write(
        tmp_path,
        """
        name: heads
        base: {model: {backbone: tiny, shapeprop: {latent_channels: 8}}, data: {dataset: synthetic}}
        rows: [{label: wide, method: more_head_params}]
        """,
    )
    (wide,) = expand(load_suite(path))
    head = ModelConfig(backbone="tiny", shapeprop=ShapePropConfig(latent_channels=8))
    assert wide.config.model.mask_head_channels == widened_mask_head_channels(head, len(CLASSES))
    default = widened_mask_head_channels(
        head.model_copy(update={"shapeprop": ShapePropConfig()}), len(CLASSES)
    )
    assert wide.config.model.mask_head_channels != default  # the base's head, not the default one


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
