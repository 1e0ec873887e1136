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


def test_plan_and_run_name_a_shared_training(tmp_path):
    """Two rows that differ only in what they evaluate train once: `plan` shows the second as
    `evaluate`, trained by the first, and `run --dry-run` counts it."""
    from click.testing import CliRunner

    from harness.cli import main

    path = write(
        tmp_path,
        """
        name: shares
        base: {model: {backbone: tiny}}
        rows:
          - {label: all classes, method: mask_rcnn}
          - {label: voc classes, method: mask_rcnn, overrides: {eval: {categories: voc}}}
        """,
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    planned = CliRunner().invoke(main, ["plan", str(path), "--tracking-uri", uri], terminal_width=250)
    assert planned.exit_code == 0, planned.output
    assert "2 of 2 runs would execute, 1 only evaluate (trained by another run)" in planned.output
    (trains,) = [line for line in planned.output.splitlines() if "all classes" in line]
    (evaluates,) = [line for line in planned.output.splitlines() if "voc classes" in line]
    first_key = trains.split("│")[-3].strip()  # the key column, before "trained by"
    assert len(first_key) == 16 and "│ run " in trains
    assert "│ evaluate " in evaluates and evaluates.split("│")[-2].strip() == f"shares/{first_key}"
    dry = CliRunner().invoke(main, ["run", str(path), "--tracking-uri", uri, "--dry-run", "--no-preflight"])
    assert dry.exit_code == 0, dry.output
    assert "2 runs, 2 to run, 1 only evaluate (trained by another run), 0 already finished" in dry.output
