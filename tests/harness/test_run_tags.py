"""A run's config flattened to dotted keys (its MLflow params)."""

from __future__ import annotations

from harness.run_tags import flatten_config
from harness.suite import expand, load_suite
from tests.helpers.suites import ABLATIONS


def test_flattened_config_has_dotted_keys():
    spec = expand(load_suite(ABLATIONS), "mini")[3]
    flat = flatten_config(spec.config)
    assert flat["model.backbone"] == "tiny"
    assert flat["model.shapeprop.latent_channels"] == "8"
    assert flat["data.masks.kind"] == "all"
    assert flat["schedule.milestones"] == "[60000, 80000]"
    assert flat["seed"] == "0"
