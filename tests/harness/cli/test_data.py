"""The `data` CLI group: generate, stats and verify, through click's runner and one real process."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from harness.cli.data import data
from shapeprop.data import catalog
from tests.helpers.data_factories import write_coco

SMALL = ["--num-images", "8", "--image-size", "48"]


def run(*args):
    return CliRunner().invoke(data, [str(a) for a in args])


def test_generate_then_stats_under_a_category_split(tmp_path):
    result = run("generate", "--root", tmp_path, *SMALL)
    assert result.exit_code == 0, result.output
    assert "train: 8 images" in result.output and "val: 8 images" in result.output
    assert (tmp_path / "annotations" / "instances_val.json").is_file()

    options = ["--option", "num_images=8", "--option", "image_size=48"]
    result = run(
        "stats",
        "synthetic",
        "--root",
        tmp_path,
        *options,
        "--masks",
        "categories",
        "--classes",
        "voc",
        "--json",
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    dataset = catalog.load("synthetic", tmp_path, "train", num_images=8, image_size=48)
    voc = set(dataset.metadata.class_groups["voc"])
    anns = [a for r in dataset.records for a in r["annotations"]]
    assert out["images"] == 8 and out["boxes"] == len(anns)
    assert out["masks"] == sum(dataset.metadata.classes[a["category_id"]] in voc for a in anns)
    for name, counts in out["per_class"].items():
        assert counts["masks"] == (counts["boxes"] if name in voc else 0)
    assert len(out["fingerprint"]) == 64

    table = run("stats", "synthetic", "--root", tmp_path, *options)
    assert table.exit_code == 0 and "crescent" in table.output and "nonvoc" in table.output


def test_stats_errors(tmp_path):
    result = run(
        "stats",
        "synthetic",
        "--root",
        tmp_path,
        "--option",
        "num_images=4",
        "--masks",
        "categories",
        "--classes",
        "unicorn",
    )
    assert result.exit_code == 1 and "unknown class name(s) 'unicorn'" in result.output
    result = run("stats", "synthetic", "--root", tmp_path, "--option", "num_images")
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
    result = run("stats", "synthetic", "--masks", "image_fraction", "--fraction", "3")
    assert result.exit_code == 2 and "fraction" in result.output


def test_verify_clean_and_broken_coco(tmp_path):
    truth = write_coco(tmp_path)
    result = run("verify", "coco_2017", "--root", tmp_path, "--split", "val", "--decode")
    assert result.exit_code == 0, result.output
    assert "coco_2017 val: 2 images, 5 annotations: ok" in result.output

    payload = json.loads(truth["json"].read_text())
    payload["annotations"][0]["bbox"] = [40.0, 30.0, 50.0, 10.0]  # past the 64-pixel-wide border
    payload["annotations"][4]["bbox"] = [0.0, 0.0, 5.0, 5.0]  # its mask lies elsewhere
    truth["json"].write_text(json.dumps(payload))
    (tmp_path / "val2017" / "000000000009.jpg").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "val2017" / "000000000007.jpg").unlink()
    result = run("verify", "coco_2017", "--root", tmp_path, "--split", "val")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert "5 problem(s)" in lines[0]  # annotation 0: box out of bounds, and its mask outside it
    assert any("000000000007.jpg: image not found" in line for line in lines)
    assert any("000000000009.jpg: unreadable image" in line for line in lines)
    assert any(
        "image 7 annotation 0 bbox: box [40.0, 30.0, 50.0, 10.0] out of the 64x48 image" in line
        for line in lines
    )
    assert any("image 9 annotation 2 segmentation: mask extent" in line for line in lines)


def test_verify_unloadable_root_in_a_real_process(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text('{"images": [')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli.data",
            "verify",
            "coco_2017",
            "--root",
            str(tmp_path),
            "--split",
            "val",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "instances_val2017.json: malformed JSON at line 1" in proc.stdout and "truncated" in proc.stdout
    missing = run("verify", "voc_2012", "--root", tmp_path / "none", "--split", "val")
    assert missing.exit_code == 1 and "VOC root not found" in missing.output
