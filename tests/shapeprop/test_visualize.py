"""`shapeprop.visualize`: crop geometry against direct indexing, map pasting, GT matching, and the
pixel layout of rendered figures (checked on the PNG bytes)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.text import Text
from PIL import Image

from shapeprop import visualize as vis


def test_resample_at_native_scale_is_slicing_and_zero_outside():
    rng = np.random.default_rng(0)
    image = rng.random((20, 30, 3)).astype(np.float32)
    out = vis.resample(image, (4, 3, 14, 13), 10)
    np.testing.assert_allclose(out, image[3:13, 4:14], atol=1e-6)
    # A window hanging over the top-left corner: the part outside the image is zero.
    out = vis.resample(image[..., 0], (-2, -3, 6, 5), 8)
    np.testing.assert_allclose(out[3:, 2:], image[:5, :6, 0], atol=1e-6)
    assert not out[:3].any() and not out[:, :2].any()


def test_resample_at_half_scale_averages_two_by_two_blocks():
    rng = np.random.default_rng(1)
    image = rng.random((8, 8)).astype(np.float32)
    out = vis.resample(image, (0, 0, 8, 8), 4)
    blocks = image.reshape(4, 2, 4, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(out, blocks, atol=1e-6)


def test_square_crop_and_window_box():
    window = vis.square_crop((10, 20, 30, 60), margin=0.25)
    x0, y0, x1, y1 = window
    assert x1 - x0 == pytest.approx(y1 - y0) == pytest.approx(40 * 1.5)
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx((20, 40))
    np.testing.assert_allclose(vis.window_box((10, 20, 30, 60), window, 120), [40, 20, 80, 100], atol=1e-4)
    tiny = vis.square_crop((5, 5, 6, 6), min_side=16)
    assert tiny[2] - tiny[0] == pytest.approx(16)
    np.testing.assert_allclose(vis.image_window(40, 100), [0, -30, 100, 70])


def test_paste_roi_map_fills_the_box_in_panel_coordinates():
    window = (0.0, 0.0, 40.0, 40.0)
    pasted = vis.paste_roi_map(np.ones((14, 14), np.float32), (10, 20, 30, 30), window, 80)
    # The box is x 20..60, y 40..60 in the 80 px panel (2x the window).
    assert pasted[42:58, 22:58].min() == pytest.approx(1.0)
    assert pasted[:38].max() == 0 and pasted[62:].max() == 0
    assert pasted[:, :18].max() == 0 and pasted[:, 62:].max() == 0


def test_match_ground_truth_and_mask_iou():
    gt = vis.GroundTruth(
        boxes=np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32),
        labels=["a", "b"],
        masks=np.zeros((2, 50, 50), bool),
    )
    assert vis.match_ground_truth(np.array([21, 19, 41, 40]), gt)[0] == 1
    index, iou = vis.match_ground_truth(np.array([5, 5, 15, 15]), gt)
    assert index is None and iou == pytest.approx(25 / 175)
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert vis.mask_iou(a, b) == pytest.approx(4 / 12)
    assert vis.mask_iou(a & False, b & False) == 0.0


def _view(with_maps: bool, n: int = 2) -> vis.ImageView:
    rng = np.random.default_rng(2)
    image = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    gt_mask = np.zeros((48, 64), bool)
    gt_mask[10:30, 12:36] = True
    detections = []
    for i in range(n):
        mask = np.zeros((48, 64), np.float32)
        mask[12 + i : 28, 14:34] = 0.9
        ramp = np.linspace(0, 1, 14, dtype=np.float32)
        detections.append(
            vis.Detection(
                box=np.array([12 + i, 10, 36, 30], np.float32),
                label="ring",
                score=0.9 - 0.1 * i,
                mask=mask,
                saliency=np.outer(ramp, ramp) if with_maps else None,
                shape_activation=np.full((14, 14), 0.8, np.float32) if with_maps else None,
            )
        )
    gt = vis.GroundTruth(np.array([[12, 10, 36, 30]], np.float32), ["ring"], gt_mask[None])
    return vis.ImageView(7, image, gt, detections)


def _png(fig, path) -> np.ndarray:
    vis.save_png(fig, path)
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255


@pytest.mark.parametrize("with_maps", [True, False])
def test_detection_figure_size_and_panels(tmp_path, with_maps):
    view = _view(with_maps)
    pixels = _png(vis.render_detections(view, "title", max_detections=2, panel=96), tmp_path / "f.png")
    layout = vis.detection_layout(2, with_maps, panel=96)
    assert pixels.shape[1::-1] == layout.size
    assert layout.cols == (5 if with_maps else 3)
    panels = [
        [pixels[y0:y1, x0:x1] for x0, y0, x1, y1 in (layout.panel_box(r, c) for c in range(layout.cols))]
        for r in range(2)
    ]
    for row in panels:
        for p in row:
            assert p.std() > 0.02  # not blank
        for i in range(len(row)):
            for j in range(i + 1, len(row)):
                assert np.abs(row[i] - row[j]).mean() > 0.01, (i, j)
    # The gap between two panels is background (the layout puts panels where it says).
    x1 = layout.panel_box(0, 0)[2]
    y0, y1 = layout.panel_box(0, 0)[1], layout.panel_box(0, 0)[3]
    assert pixels[y0 + 2 : y1 - 2, x1 + 3 : x1 + layout.gap_px - 3].min() > 0.99
    if with_maps:  # a colour bar under the heat-map columns
        x0, cy0, cx1, cy1 = layout.colorbar_box(1, 2)
        bar = pixels[cy0 + 3 : cy1 - 3, x0 + 3 : cx1 - 3]
        assert bar.std() > 0.1 and bar.min() < 0.2


def _texts(fig) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(Text))


def test_detection_figure_without_detections_says_so(tmp_path):
    view = _view(True)  # detections with scores 0.9 and 0.8
    fig = vis.render_detections(view, "t", min_score=0.95, panel=96)
    text = _texts(fig)
    assert "no detection with score >= 0.95" in text and "best score 0.90" in text
    assert "detection 1" not in text  # no detection row
    pixels = _png(fig, tmp_path / "f.png")
    layout = vis.detection_layout(0, True, panel=96)
    assert pixels.shape[1::-1] == layout.size
    x0, y0, x1, _ = layout.panel_box(0, 1)
    assert pixels[y0 : y0 + 40, x0:x1].min() < 0.3  # the message is drawn where the panels would be
    # A model that returned nothing at all says that instead.
    empty = vis.render_detections(_view(True, n=0), "t", panel=96)
    assert "the model returned no detection" in _texts(empty) and "best score" not in _texts(empty)


def test_comparison_figure(tmp_path):
    a, b = _view(True), _view(False, n=1)
    b.detections[0].mask[:] = 0.0  # model b finds the object but predicts an empty mask
    pixels = _png(vis.render_comparison([[a], [b]], ["A", "B"], "t", panel=128), tmp_path / "c.png")
    layout = vis.comparison_layout(1, 2, panel=128)
    assert pixels.shape[1::-1] == layout.size
    gt, pa, pb = (pixels[y0:y1, x0:x1] for x0, y0, x1, y1 in (layout.panel_box(0, c) for c in range(3)))
    assert np.abs(gt - pa).mean() > 0.005 and np.abs(pa - pb).mean() > 0.005
    with pytest.raises(ValueError, match="different numbers of images"):
        vis.render_comparison([[a], [a, a]], ["A", "B"], "t")
