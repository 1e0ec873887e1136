"""PASCAL VOC 2012 loader on a small VOC tree with palette PNGs and XML written by the test."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shapeprop.data import DataError, MissingDataError, catalog
from shapeprop.data.masks import annotation_to_mask
from tests.helpers.data_factories import VOC_NAMES, write_voc


@pytest.fixture
def voc(tmp_path):
    return write_voc(tmp_path)


def test_records_match_the_written_tree(voc, tmp_path):
    # the VOCdevkit directory is accepted as root too
    for root in (voc["root"], tmp_path / "VOCdevkit"):
        dataset = catalog.load("voc_2012", root, "train")
        assert dataset.metadata.classes == VOC_NAMES
        assert [r["image_id"] for r in dataset.records] == voc["splits"]["train"]
    for record in dataset.records:
        assert record["file_name"] == str(voc["root"] / "JPEGImages" / f"{record['image_id']}.jpg")
        assert (record["height"], record["width"]) == (40, 56)
        truth = voc["objects"][record["image_id"]]
        assert len(record["annotations"]) == len(truth)
        for ann, obj in zip(record["annotations"], truth, strict=True):
            assert VOC_NAMES[ann["category_id"]] == obj["name"]
            assert ann["bbox"] == obj["bbox"] and ann["difficult"] == obj["difficult"]
            assert ann["has_mask"] == bool(obj["mask"].any())
            if ann["has_mask"]:
                mask = annotation_to_mask(ann, 40, 56)
                assert np.array_equal(mask, obj["mask"])  # void (255) border is not part of the mask
                ys, xs = np.nonzero(mask)
                assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    boxless = dataset.records[1]["annotations"][1]
    assert boxless["segmentation"] is None and not boxless["has_mask"]
    assert len(catalog.load("voc_2012", voc["root"], "trainval").records) == 3


def test_fingerprint_follows_label_files(voc):
    before = catalog.load("voc_2012", voc["root"], "val").metadata.fingerprint
    path = voc["root"] / "SegmentationObject" / "2008_000003.png"
    image = Image.open(path)
    pixels = np.array(image)
    pixels[10, 20] = 0
    out = Image.fromarray(pixels, mode="P")
    out.putpalette(image.getpalette())
    out.save(path)
    assert catalog.load("voc_2012", voc["root"], "val").metadata.fingerprint != before


def test_bad_input(voc):
    root = voc["root"]
    with pytest.raises(MissingDataError, match="test.txt: image list of split 'test' not found"):
        catalog.load("voc_2012", root, "test")
    xml = root / "Annotations" / "2008_000003.xml"
    text = xml.read_text()
    xml.write_text(text.replace("<name>cat</name>", "<name>kitten</name>"))
    with pytest.raises(DataError, match=r"2008_000003.xml: object\[0\]/name: unknown VOC class 'kitten'"):
        catalog.load("voc_2012", root, "val")
    xml.write_text(text.replace("<name>cat</name>", "<name>dog</name>"))
    with pytest.raises(DataError, match="SegmentationClass/2008_000003.png.*'dog' in the XML but 'cat'"):
        catalog.load("voc_2012", root, "val")
    xml.write_text(text[:-40])
    with pytest.raises(DataError, match="2008_000003.xml: malformed XML at line"):
        catalog.load("voc_2012", root, "val")
    xml.write_text(text)
    rgb = root / "SegmentationObject" / "2008_000003.png"
    original = rgb.read_bytes()
    Image.open(rgb).convert("RGB").save(rgb)
    with pytest.raises(DataError, match="2008_000003.png: expected a palette"):
        catalog.load("voc_2012", root, "val")
    (root / "SegmentationObject" / "2007_000002.png").unlink()
    with pytest.raises(MissingDataError, match="2007_000002.png: SegmentationObject PNG not found"):
        catalog.load("voc_2012", root, "train")
    rgb.write_bytes(original)
    pixels = np.array(Image.open(rgb))
    pixels[pixels == 1] = 4  # an object index the XML does not have
    relabelled = Image.fromarray(pixels, mode="P")
    relabelled.putpalette(Image.open(rgb).getpalette())
    relabelled.save(rgb)
    with pytest.raises(DataError, match="2008_000003.png: object index 4 has no matching object"):
        catalog.load("voc_2012", root, "val")
    (root / "JPEGImages" / "2008_000003.jpg").unlink()
    rgb.write_bytes(original)
    with pytest.raises(MissingDataError, match="1 image.*2008_000003.jpg"):
        catalog.load("voc_2012", root, "val")
