"""The figure functions write PNGs of the expected size whose pixels show what they should."""
import json

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from selfmedmae.errors import UserError
from selfmedmae.figures.curves import (
    _pixel_mask,
    plot_learning_curves,
    plot_mae_reconstruction,
    plot_roc_curves,
    plot_segmentation_overlay,
    read_jsonl,
    segmentation_overlay_figure,
)
from selfmedmae.figures.plotting import DPI, MASK_GREY, class_colour
from selfmedmae.figures.overlay import _slice_positions


def load(path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 1000
    return np.asarray(Image.open(path).convert("RGB")).astype(int)  # [H, W, 3]


def panel(png: np.ndarray, fig, ax) -> np.ndarray:
    """The colours an image axes shows, one per displayed voxel: the PNG sampled at the voxel centres, located
    with the figure's own layout (robust to the sub-pixel offsets that differ from panel to panel)."""
    assert fig.dpi == DPI  # the PNG is saved at DPI: figure and PNG pixels coincide
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig).draw()  # once per figure: applies the image aspect, which shrinks the axes boxes
    x0, y0, x1, y1 = ax.get_window_extent(renderer=fig.canvas.get_renderer()).extents
    rows, cols = ax.get_images()[0].get_array().shape[:2]
    ys = np.floor(png.shape[0] - y1 + (np.arange(rows) + 0.5) * (y1 - y0) / rows).astype(int)
    xs = np.floor(x0 + (np.arange(cols) + 0.5) * (x1 - x0) / cols).astype(int)
    return png[np.ix_(ys, xs)]  # [rows, cols, 3]


def count_colour(png: np.ndarray, rgb, tol: int = 3) -> int:
    target = np.round(np.asarray(rgb) * 255).astype(int)
    return int((np.abs(png - target).max(-1) <= tol).sum())


# ---------------------------------------------------------------- segmentation overlay (paper Fig. 3)
def volume_and_label():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 24, 30, 16)).astype(np.float32)
    label = np.zeros((24, 30, 16), np.int64)
    label[4:14, 5:20, 3:12] = 1
    label[15:22, 8:25, 5:9] = 2
    return image, label


def test_overlay_identical_prediction_gives_identical_panels(tmp_path):
    image, label = volume_and_label()
    kwargs = dict(class_names=["anterior", "posterior"], spacing=(1.0, 1.0, 2.0))
    path = plot_segmentation_overlay(image, label.copy(), tmp_path / "same.png", label=label, **kwargs)
    png = load(path)
    assert png.shape[1] == 3 * 3 * DPI and 3 * 100 < png.shape[0] < 2000  # 3 columns of 3 in
    fig, axes = segmentation_overlay_figure(image, label.copy(), label=label, **kwargs)
    assert axes.shape == (3, 3)  # slices at 30 / 50 / 70 % x (image, ground truth, prediction)
    for row in axes:
        img, gt, pred = (panel(png, fig, ax) for ax in row)
        assert np.array_equal(gt, pred)
        assert not np.array_equal(img, gt)  # the overlay is really drawn

    wrong = label.copy()
    wrong[wrong == 2] = 1  # posterior predicted as anterior
    png2 = load(plot_segmentation_overlay(image, wrong, tmp_path / "wrong.png", label=label, **kwargs))
    assert png2.shape == png.shape
    differs = [not np.array_equal(panel(png2, fig, r[1]), panel(png2, fig, r[2])) for r in axes]
    assert any(differs)


def test_overlay_class_colours_and_no_ground_truth(tmp_path):
    image = np.zeros((1, 20, 20, 10), np.float32)  # constant image: grey 0, so a class shows alpha * its colour
    label = np.zeros((20, 20, 10), np.int64)
    label[2:9, 2:9, 2:8] = 1
    label[11:18, 11:18, 2:8] = 2
    kwargs = dict(class_names=["a", "b"], alpha=0.5)
    fig, axes = segmentation_overlay_figure(image, label, label=label, **kwargs)
    png = load(plot_segmentation_overlay(image, label, tmp_path / "colours.png", label=label, **kwargs))
    for ax in axes[1, 1:]:  # ground truth and prediction panels, middle slice
        pixels = panel(png, fig, ax)
        for k in (0, 1):
            assert count_colour(pixels, 0.5 * np.asarray(class_colour(k))) == 7 * 7  # every voxel of the class
    fig1, axes1 = segmentation_overlay_figure(image, label, **kwargs)
    assert axes1.shape == (3, 2)  # image + prediction only
    png1 = load(plot_segmentation_overlay(image, label, tmp_path / "nogt.png", **kwargs))
    assert png1.shape[1] == 2 * 3 * DPI
    assert np.array_equal(panel(png1, fig1, axes1[1, 1]), panel(png, fig, axes[1, 2]))


def test_overlay_regions_and_2d(tmp_path):
    wt = np.zeros((3, 16, 16, 8), np.uint8)
    wt[1, 2:14, 2:14, 1:7] = 1  # WT
    wt[0, 4:10, 4:10, 2:6] = 1  # TC inside WT
    wt[2, 5:7, 5:7, 3:5] = 1  # ET inside TC
    fig, axes = segmentation_overlay_figure(np.ones((4, 16, 16, 8)), wt, label=wt, multilabel=True,
                                            class_names=["TC", "WT", "ET"])
    assert axes.shape == (3, 3)
    image2d = np.random.default_rng(1).normal(size=(3, 40, 50))
    seg2d = np.zeros((40, 50), int)
    seg2d[10:30, 10:40] = 1
    png = load(plot_segmentation_overlay(image2d, seg2d, tmp_path / "2d.png", label=seg2d, class_names=["lung"]))
    fig2, axes2 = segmentation_overlay_figure(image2d, seg2d, label=seg2d, class_names=["lung"])
    assert axes2.shape == (1, 3)  # a 2D image is one row
    assert np.array_equal(panel(png, fig2, axes2[0, 1]), panel(png, fig2, axes2[0, 2]))
    with pytest.raises(ValueError, match="does not match"):
        segmentation_overlay_figure(image2d, np.zeros((40, 51), int))


def test_slice_positions_follow_the_foreground():
    fg = np.zeros((8, 8, 40), bool)
    fg[2:5, 2:5, 10:21] = True  # slices 10..20
    assert _slice_positions(fg, 2, (0.3, 0.5, 0.7)) == [13, 15, 17]
    assert _slice_positions(np.zeros((8, 8, 11), bool), 2, (0.0, 0.5, 1.0)) == [0, 5, 10]


# ---------------------------------------------------------------- ROC curves
def test_roc_curves_png(tmp_path):
    rng = np.random.default_rng(0)
    targets = (rng.random((120, 4)) < 0.3).astype(int)
    targets[:, 3] = 0  # one label without positives: listed, no curve
    scores = targets * 2.0 + rng.normal(size=(120, 4))
    png = load(plot_roc_curves(targets, scores, ["a", "b", "c", "none"], tmp_path / "roc.png", title="test"))
    assert png.shape == (600, 850, 3)
    for k in range(3):
        assert count_colour(png, class_colour(k), tol=10) > 200  # each curve is drawn in its label colour
    with pytest.raises(ValueError, match="disagree"):
        plot_roc_curves(targets, scores, ["a", "b"], tmp_path / "bad.png")


# ---------------------------------------------------------------- MAE reconstruction (paper Fig. 2)
def test_patch_mask_expands_row_major_last_axis_fastest():
    mask = np.zeros((1, 2 * 3 * 4))
    mask[0, np.ravel_multi_index((1, 2, 3), (2, 3, 4))] = 1  # token of grid cell (1, 2, 3)
    pix = _pixel_mask(mask, (8, 12, 16), 1, None)  # 4^3 patches, inferred
    expected = np.zeros((1, 8, 12, 16), bool)
    expected[0, 4:8, 8:12, 12:16] = True
    assert np.array_equal(pix, expected)
    pix2 = _pixel_mask(np.array([[0, 1, 0, 0, 0, 1]]), (4, 6), 1, (2, 2))
    assert pix2[0, :2, 2:4].all() and pix2[0, 2:, 4:].all() and pix2.sum() == 8


def grey_pixels(ratio: float, tmp_path) -> int:
    rng = np.random.default_rng(0)
    original = np.ones((2, 1, 32, 32), np.float32)  # constant: shown black, so only masked patches are grey
    mask = np.zeros((2, 16))
    for b in range(2):
        mask[b, rng.permutation(16)[: int(16 * ratio)]] = 1
    path = plot_mae_reconstruction(original, np.zeros_like(original), tmp_path / f"mae{ratio}.png", mask=mask)
    png = load(path)
    assert png.shape == (int(round((2.2 * 4 + 0.35) * DPI)), int(round((2.2 * 2 + 0.6) * DPI)), 3)  # 4 rows, 2 cols
    return count_colour(png, MASK_GREY, tol=1)


def test_mae_grid_shows_masked_patches_grey(tmp_path):
    quarter, three_quarters = grey_pixels(0.25, tmp_path), grey_pixels(0.75, tmp_path)
    assert quarter > 1000
    assert three_quarters / quarter == pytest.approx(3.0, rel=0.1)


def test_mae_grid_3d_middle_slices_and_ambiguity(tmp_path):
    vol = np.random.default_rng(0).normal(size=(1, 16, 16, 16)).astype(np.float32)  # [C, *S], one volume
    png = load(plot_mae_reconstruction(vol, vol * 0.5, tmp_path / "mae3d.png", masked=vol * 0, paste=vol,
                                       batched=False, title="3D"))
    assert png.shape[1] == int(round((2.2 * 3 + 0.6) * DPI))  # three middle slices
    with pytest.raises(ValueError, match="ambiguous"):
        plot_mae_reconstruction(vol, vol, tmp_path / "x.png")
    with pytest.raises(ValueError, match="does not tile"):
        plot_mae_reconstruction(vol[None], vol[None], tmp_path / "y.png", mask=np.zeros((1, 7)))


# ---------------------------------------------------------------- learning curves
def records(offset: float, val: bool):
    out = [{"step": s, "epoch": s // 10, "loss": 1.0 / (1 + s) + offset, "lr": 1e-3 * s / 50} for s in range(50)]
    if val:
        out += [{"epoch": e, "val_dice": 0.1 * e + offset} for e in range(5)]
    return out


def test_learning_curves(tmp_path):
    jsonl = tmp_path / "metrics.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records(0.0, True)) + "\n\n")
    recs = read_jsonl(jsonl)
    assert len(recs) == 55
    three = load(plot_learning_curves(recs, tmp_path / "one.png"))
    assert three.shape[:2] == (380, round(3 * 4.6 * DPI))  # loss, lr, validation
    two = load(plot_learning_curves(records(0.0, False), tmp_path / "pretrain.png"))
    assert two.shape[:2] == (380, round(2 * 4.6 * DPI))  # no validation panel
    runs = load(plot_learning_curves({"seed0": recs, "seed1": records(0.05, True)}, tmp_path / "two.png"))
    assert count_colour(runs, class_colour(0), tol=10) > 100 and count_colour(runs, class_colour(1), tol=10) > 100
    with pytest.raises(ValueError, match="no loss"):
        plot_learning_curves([{"step": 1}], tmp_path / "empty.png")
    jsonl.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": \n')
    with pytest.raises(UserError, match="metrics.jsonl: line 2"):
        read_jsonl(jsonl)
