"""No refactor changes a run, and run keys survive new config fields.

`tests/data/expansions.json` holds every run of every suite and profile, with its resolved config
and its key, as `tests/record_expansions.py` wrote them at the last intentional suite edit (issue
40's 1,000 val images for the mini profiles, then key scheme 3 for Mask^X's transfer+MLP; before that issue 21's faster mini recipe, and issue
18's architecture change, which also moved the keys to the scheme of `harness/suite/keys.py`). `tests/data/expansion-keys.json` maps each recorded key to
the key it must have now (at issue 18: old scheme -> new; since: itself), so that an accidental
change of any key fails. After an intentional suite edit, re-record both (README "Run keys").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pydantic import Field, create_model

from harness.suite import expand, load_suite, run_key
from shapeprop.config import ExperimentConfig, ModelConfig, ScheduleConfig, ShapePropConfig
from shapeprop.config import _Strict as StrictConfig
from tests.helpers import ROOT

RECORDED = json.loads((ROOT / "tests" / "data" / "expansions.json").read_text())
NEW_KEYS = json.loads((ROOT / "tests" / "data" / "expansion-keys.json").read_text())


def _identity(run: dict) -> tuple:
    return (
        run["file"],
        run["profile"],
        run["row"],
        run["method"],
        run["seed"],
        json.dumps(run["axes"], sort_keys=True),
    )


@pytest.fixture(scope="module")
def expanded() -> dict[tuple, tuple[str, object]]:
    out = {}
    for file in sorted({run["file"] for run in RECORDED}):
        suite = load_suite(ROOT / file)
        for profile in suite.profile_names():
            for spec in expand(suite, profile):
                record = {"file": file, "profile": profile, "row": spec.row, "method": spec.method}
                record |= {"seed": spec.seed, "axes": spec.axes}
                out[_identity(record)] = (spec.suite, spec)
    return out


def test_every_suite_expands_to_the_recorded_runs_and_configs(expanded):
    assert set(expanded) == {_identity(run) for run in RECORDED}
    for run in RECORDED:
        _, spec = expanded[_identity(run)]
        # read with today's fields: a field added since (with its neutral default) is no change
        recorded = ExperimentConfig.model_validate(run["config"]).model_dump(mode="json")
        assert spec.config.model_dump(mode="json") == recorded, _identity(run)


def test_keys_changed_once_to_the_recorded_new_scheme(expanded):
    assert len(set(NEW_KEYS.values())) == len(NEW_KEYS) == len(RECORDED)
    for run in RECORDED:
        _, spec = expanded[_identity(run)]
        assert spec.key == NEW_KEYS[run["key"]], _identity(run)


def _with_new_fields() -> type:
    """ExperimentConfig with a field added where a real change would add one, each with a default
    that keeps the old behaviour: a schedule option, a ShapeProp head option (inside a section that
    is None by default), and a whole new section."""
    schedule = create_model("ScheduleConfig", __base__=ScheduleConfig, grad_clip_norm=(float | None, None))
    head = create_model("ShapePropConfig", __base__=ShapePropConfig, dropout=(float, 0.0))
    model = create_model("ModelConfig", __base__=ModelConfig, shapeprop=(head | None, None))
    logging_section = create_model("LoggingConfig", __base__=StrictConfig, every=(int, 20))
    return create_model(
        "ExperimentConfig",
        __base__=ExperimentConfig,
        schedule=(schedule, Field(default_factory=schedule)),
        model=(model, Field(default_factory=model)),
        logging=(logging_section, Field(default_factory=logging_section)),
    )


def test_a_new_field_with_a_neutral_default_leaves_every_key_unchanged(expanded):
    extended = _with_new_fields()
    for run in RECORDED:
        suite_name, spec = expanded[_identity(run)]
        config = extended.model_validate(run["config"])
        assert "grad_clip_norm" in config.schedule.model_dump()  # the new fields are there
        assert run_key(suite_name, config) == spec.key, _identity(run)
    # ... and setting one to another value makes a new key
    suite_name, spec = next(iter(expanded.values()))
    changed = extended.model_validate(spec.config.model_dump(mode="json") | {"logging": {"every": 5}})
    assert run_key(suite_name, changed) != spec.key


def test_sections_none_and_default_have_different_keys():
    plain = ExperimentConfig()
    with_head = ExperimentConfig(model={"shapeprop": {}})
    assert run_key("s", plain) != run_key("s", with_head)


def test_plan_of_the_ablations_imports_neither_torch_nor_torchvision(tmp_path):
    code = (
        "import sys\n"
        "from harness.cli import main\n"
        "try:\n"
        f"    main(['plan', {str(ROOT / 'suites' / 'ablations.yaml')!r}, '--tracking-uri', "
        f"'sqlite:///{tmp_path / 'mlflow.db'}'])\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "print('IMPORTED', sorted(m for m in ('torch', 'torchvision', 'lightning') if m in sys.modules))\n"
    )
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "baseline + More head params" in out.stdout  # it did plan the suite
    assert "IMPORTED []" in out.stdout
