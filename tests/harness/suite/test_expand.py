"""Expansion: counts, the resolution order (base, method, row, axis, profile, --set), profile
seeds and row overrides, sections switched on only where a run has them."""

from __future__ import annotations

import pytest

from harness.suite import SuiteError, expand, load_suite, parse_overrides
from shapeprop.config import ExperimentConfig
from tests.helpers.suites import ABLATIONS, write


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


def test_set_overrides_apply_last_and_are_validated(tmp_path):
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
