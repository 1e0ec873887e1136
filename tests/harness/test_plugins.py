"""Plugins (issue 42): a user's module registers a dataset and a method; found by a suite's
`plugins:`, by `--plugin` and by an installed entry point; errors name the plugin."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import methods, plugins
from harness.cli import main
from harness.suite import SuiteError, expand, load_suite
from shapeprop.data import catalog

PLUGIN = """
from harness.methods import Method, register
from shapeprop.data import catalog
from shapeprop.data.synthetic import load_synthetic


def load_tiny_shapes(root=None, split="train", num_images=4):
    return load_synthetic(root, split, num_images=num_images, image_size=64)


catalog.register("{dataset}", load_tiny_shapes, classes=["a"] * 10)
register(Method("{method}", "Mask R-CNN with a frozen... (a test method)",
                lambda cfg: {{"model.arch": "mask_rcnn", "model.mask_head_channels": 8}}))
"""

SUITE = """\
name: with-plugin
plugins: [{plugin}]
base:
  data: {{dataset: {dataset}}}
  model: {{backbone: tiny}}
rows:
  - {{label: mine, method: {method}}}
  - {{label: baseline, method: mask_rcnn}}
"""


@pytest.fixture
def isolated(monkeypatch):
    """Registries, loaded plugins and $SHAPEPROP_PLUGINS restored after the test."""
    monkeypatch.setattr(plugins, "_loaded", [])
    monkeypatch.setattr(plugins, "_explicit", [])
    monkeypatch.setenv(plugins.ENV, "")  # restored (unset) after the test, whatever loading sets
    datasets, known_methods = catalog.DATASETS.names(), methods.names()
    yield
    for name in set(catalog.DATASETS.names()) - set(datasets):
        catalog.DATASETS.unregister(name)
    for name in set(methods.names()) - set(known_methods):
        methods.METHODS.unregister(name)


def write_plugin(folder: Path, stem: str, dataset: str, method: str) -> Path:
    path = folder / f"{stem}.py"
    path.write_text(PLUGIN.format(dataset=dataset, method=method))
    return path


def test_a_suites_plugin_file_registers_a_dataset_and_a_method_that_expand(tmp_path, isolated):
    write_plugin(tmp_path, "my_plugin", "tiny_shapes", "narrow_mask_head")
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.format(plugin="my_plugin.py", dataset="tiny_shapes", method="narrow_mask_head"))
    runs = {r.row: r for r in expand(load_suite(suite))}
    assert (
        runs["mine"].config.model.mask_head_channels == 8
        and runs["mine"].config.data.dataset == "tiny_shapes"
    )
    assert methods.METHODS.source("narrow_mask_head") == "plugin 'my_plugin.py'"
    assert catalog.DATASETS.source("tiny_shapes") == "plugin 'my_plugin.py'"
    # worker processes load it again from the environment
    import os

    assert os.environ[plugins.ENV] == str(tmp_path / "my_plugin.py")
    assert len(catalog.load("tiny_shapes", split="val")) == 4


def test_a_misspelt_method_of_a_plugin_gets_a_located_suggestion(tmp_path, isolated):
    write_plugin(tmp_path, "my_plugin", "tiny_shapes", "narrow_mask_head")
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.format(plugin="my_plugin.py", dataset="tiny_shapes", method="narow_mask_head"))
    with pytest.raises(SuiteError) as err:
        load_suite(suite)
    assert "s.yaml:7" in str(err.value) and "did you mean 'narrow_mask_head'?" in str(err.value)


def test_errors_in_a_plugin_name_the_plugin_and_the_line(tmp_path, isolated):
    broken = tmp_path / "broken.py"
    broken.write_text("x = 1\nraise RuntimeError('no licence key')\n")
    with pytest.raises(
        plugins.PluginError, match=r"plugin 'broken.py': RuntimeError: no licence key \(.*broken.py:2\)"
    ):
        plugins.load("broken.py", relative_to=tmp_path)
    (tmp_path / "syntax.py").write_text("def f(:\n")
    with pytest.raises(plugins.PluginError, match=r"plugin 'syntax.py': SyntaxError: .*syntax.py:1"):
        plugins.load("syntax.py", relative_to=tmp_path)
    with pytest.raises(plugins.PluginError, match="plugin 'no_such_plugin_module': no module named"):
        plugins.load("no_such_plugin_module")
    # a suite that names it locates the error at its plugins: entry
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.format(plugin="broken.py", dataset="synthetic", method="mask_rcnn"))
    with pytest.raises(SuiteError, match=r"s.yaml:2.*plugin 'broken.py': RuntimeError"):
        load_suite(suite)


def test_two_plugins_registering_one_name_are_both_named(tmp_path, isolated):
    write_plugin(tmp_path, "first", "shared_name", "method_one")
    write_plugin(tmp_path, "second", "shared_name", "method_two")
    plugins.load("first.py", relative_to=tmp_path)
    with pytest.raises(
        plugins.PluginError,
        match="plugin 'second.py'.*dataset 'shared_name' is already registered by plugin 'first.py'",
    ):
        plugins.load("second.py", relative_to=tmp_path)


def test_the_command_line_option_and_an_installed_entry_point(tmp_path, isolated, monkeypatch):
    write_plugin(tmp_path, "cli_plugin", "cli_shapes", "cli_method")
    runner = CliRunner()
    out = runner.invoke(
        main, ["--plugin", str(tmp_path / "cli_plugin.py"), "data", "verify", "cli_shapes", "--split", "val"]
    )
    assert out.exit_code == 0, out.output
    assert "cli_shapes val: 4 images" in out.output
    bad = runner.invoke(main, ["--plugin", str(tmp_path / "missing.py"), "plan", "x.yaml"])
    assert bad.exit_code == 2 and "plugin '" in bad.output and "no such file" in bad.output

    # an installed distribution advertising the plugin under the entry-point group
    package = tmp_path / "site"
    (package / "ep_plugin").mkdir(parents=True)
    write_plugin(package / "ep_plugin", "__init__", "ep_shapes", "ep_method")
    dist = package / "ep_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\nshapes = ep_plugin\n")
    monkeypatch.syspath_prepend(str(package))
    plugins.load_all()
    assert "ep_shapes" in catalog.DATASETS and methods.METHODS.source("ep_method") == "plugin 'shapes'"
    sys.modules.pop("ep_plugin", None)


def test_a_plugins_method_that_names_a_misspelt_detector_is_blamed_on_the_plugin(tmp_path, isolated):
    (tmp_path / "typo.py").write_text(
        "from harness.methods import Method, register\n"
        "register(Method('typo_method', 'a method with a typo', lambda cfg: {'model.arch': 'mask_rnn'}))\n"
    )
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.format(plugin="typo.py", dataset="synthetic", method="typo_method"))
    with pytest.raises(SuiteError) as err:
        load_suite(suite)
    message = str(err.value)
    assert "s.yaml:7" in message and "unknown detector 'mask_rnn' (did you mean 'mask_rcnn'?)" in message
    assert "set by method 'typo_method' of plugin 'typo.py'" in message
