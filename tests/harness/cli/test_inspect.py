"""`plan` takes `--set` and names a bad key with the fix."""

from __future__ import annotations

from tests.helpers.suites import write


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
