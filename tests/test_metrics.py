"""Dice, HD95 and AUC against independent numpy references on hand-built cases (issue 5, acceptance 2)."""
import itertools
import json
import math

import numpy as np
import pytest
import torch

from selfmedmae.data.btcv import PAPER_ORGANS
from selfmedmae.metrics.auc import multilabel_auc, roc_auc, roc_curve
from selfmedmae.metrics.dice import (
    BRATS_HD_PENALTY_MM,
    onehot_from_labelmap,
    onehot_from_logits,
    segmentation_scores,
    summarize_segmentation,
    write_metrics,
)

BTCV_8_ORGAN_INDICES = tuple(v - 1 for v in PAPER_ORGANS)  # 0-based over the 13 foreground classes


# ---------------------------------------------------------------- independent references (no MONAI, no scipy)
def ref_boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with a face neighbour in the background (outside the array counts as background)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = np.ones_like(mask, dtype=bool)
    for axis in range(mask.ndim):
        for shift in (-1, 1):
            interior &= np.roll(padded, shift, axis=axis)[tuple(slice(1, -1) for _ in range(mask.ndim))]
    return mask & ~interior


def ref_hd(pred: np.ndarray, gt: np.ndarray, spacing, percentile=95.0) -> float:
    """Symmetric percentile Hausdorff distance by explicit pairwise distances between boundary voxels in mm."""
    a = np.argwhere(ref_boundary(pred)) * np.asarray(spacing, float)
    b = np.argwhere(ref_boundary(gt)) * np.asarray(spacing, float)
    dist = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))  # [|A|, |B|]
    return max(np.percentile(dist.min(1), percentile), np.percentile(dist.min(0), percentile))


def ref_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    return 2.0 * (pred & gt).sum() / (pred.sum() + gt.sum())


def ref_auc(targets, scores) -> float:
    """Pairwise count: P(score_pos > score_neg) + 0.5 P(tie)."""
    pos, neg = scores[targets == 1], scores[targets == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def blob(shape, rng, n_spheres=3, radius=3.0) -> np.ndarray:
    """An irregular binary shape: a union of random balls (index units)."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    mask = np.zeros(shape, bool)
    for _ in range(n_spheres):
        centre = rng.uniform(radius, np.asarray(shape) - radius)
        mask |= ((grid - centre) ** 2).sum(-1) <= radius**2
    return mask


def to_onehot(*channels: np.ndarray) -> torch.Tensor:
    """Background + the given foreground masks as a one-hot [1, 1 + K, *spatial] tensor (masks must not overlap)."""
    fg = np.stack(channels)
    return torch.from_numpy(np.concatenate([~fg.any(0, keepdims=True), fg])[None].astype(np.uint8))


# ---------------------------------------------------------------- segmentation
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_and_dice_match_reference_with_anisotropic_spacing(seed):
    rng = np.random.default_rng(seed)
    shape, spacing = (14, 14, 9), (1.0, 1.0, 3.0)
    gt, pred = blob(shape, rng), blob(shape, rng)
    scores = segmentation_scores(to_onehot(pred), to_onehot(gt), spacing, ["organ"])[0]
    expected = ref_hd(pred, gt, spacing)
    assert scores.hd95["organ"] == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert scores.dice["organ"] == pytest.approx(ref_dice(pred, gt), abs=1e-6)
    # the spacing matters: the isotropic answer differs, so the z spacing really is used
    assert abs(ref_hd(pred, gt, (1, 1, 1)) - expected) > 0.1


def test_hd_shift_along_thick_axis_is_in_mm():
    gt = np.zeros((10, 10, 8), bool)
    gt[3:7, 3:7, 2:5] = True
    pred = np.roll(gt, 1, axis=2)  # one slice further along z, slices 3 mm apart
    s = segmentation_scores(to_onehot(pred), to_onehot(gt), (0.8, 0.8, 3.0), ["box"])[0]
    assert s.hd95["box"] == pytest.approx(3.0)
    assert s.hd95["box"] == pytest.approx(ref_hd(pred, gt, (0.8, 0.8, 3.0)))
    assert s.dice["box"] == pytest.approx(2 * 32 / 96)


def test_per_case_spacing_and_2d():
    rng = np.random.default_rng(5)
    gts = [blob((20, 16), rng, radius=4) for _ in range(2)]
    preds = [blob((20, 16), rng, radius=4) for _ in range(2)]
    spacings = [(0.5, 2.0), (1.5, 1.0)]
    pred = torch.cat([to_onehot(p) for p in preds])
    gt = torch.cat([to_onehot(g) for g in gts])
    cases = segmentation_scores(pred, gt, spacings, ["x"], case_ids=["a", "b"])
    for c, p, g, sp in zip(cases, preds, gts, spacings):
        assert c.hd95["x"] == pytest.approx(ref_hd(p, g, sp), rel=1e-5)
        assert c.dice["x"] == pytest.approx(ref_dice(p, g), abs=1e-6)
        assert c.spacing == list(sp)
    assert [c.case_id for c in cases] == ["a", "b"]


def test_perfect_absent_empty_and_false_positive_cases():
    shape, spacing = (12, 12, 8), (1.0, 1.0, 3.0)
    organ = np.zeros(shape, bool)
    organ[2:6, 2:6, 2:5] = True
    other = np.zeros(shape, bool)
    other[8:11, 8:11, 4:7] = True
    nothing = np.zeros(shape, bool)
    names = ["perfect", "absent", "missed", "false_pos"]
    # classes: perfect (same in both), absent (empty in both), missed (gt only), false_pos (pred only)
    gt = to_onehot(organ, nothing, other, nothing)
    pred = to_onehot(organ, nothing, nothing, other)
    s = segmentation_scores(pred, gt, spacing, names)[0]
    diagonal = math.sqrt(12**2 + 12**2 + (8 * 3) ** 2)
    assert s.dice == {"perfect": 1.0, "absent": 1.0, "missed": 0.0, "false_pos": 0.0}
    assert s.hd95 == pytest.approx({"perfect": 0.0, "absent": 0.0, "missed": diagonal, "false_pos": diagonal})
    assert s.gt_empty == {"perfect": False, "absent": True, "missed": False, "false_pos": True}
    assert s.pred_empty == {"perfect": False, "absent": True, "missed": True, "false_pos": False}

    fixed = segmentation_scores(pred, gt, spacing, names, hd_penalty=BRATS_HD_PENALTY_MM)[0]
    assert fixed.hd95["missed"] == fixed.hd95["false_pos"] == BRATS_HD_PENALTY_MM
    # the default penalty is the image diagonal in mm, which is the BraTS value on the BraTS grid
    assert math.sqrt(240**2 + 240**2 + 155**2) == pytest.approx(BRATS_HD_PENALTY_MM, abs=0.01)

    excluded = segmentation_scores(pred, gt, spacing, names, hd_penalty=float("nan"))
    summary = summarize_segmentation(excluded, names)
    assert summary["classes"]["missed"]["n_hd"] == 0 and math.isnan(summary["classes"]["missed"]["hd95"])
    assert summary["mean"]["hd95"] == 0.0  # only perfect and absent contribute
    assert summary["mean"]["dice"] == 0.5


def test_background_channel_is_dropped_unless_asked():
    gt = np.zeros((8, 8, 8), bool)
    gt[2:5, 2:5, 2:5] = True
    onehot = to_onehot(gt)
    assert len(segmentation_scores(onehot, onehot, (1, 1, 1), ["fg"])[0].dice) == 1
    both = segmentation_scores(onehot, onehot, (1, 1, 1), ["bg", "fg"], include_background=True)[0]
    assert both.dice == {"bg": 1.0, "fg": 1.0}
    with pytest.raises(ValueError, match="class names"):
        segmentation_scores(onehot, onehot, (1, 1, 1), ["bg", "fg"])


def test_region_task_sigmoid_threshold_overlapping_channels():
    # BraTS-like nested regions TC inside WT, ET inside TC: logits > 0 <=> sigmoid > 0.5
    wt = np.zeros((10, 10, 6), bool)
    wt[1:9, 1:9, 1:5] = True
    tc = np.zeros_like(wt)
    tc[3:7, 3:7, 2:4] = True
    et = np.zeros_like(wt)
    et[4:6, 4:6, 2:3] = True
    label = torch.from_numpy(np.stack([tc, wt, et])[None].astype(np.uint8))
    logits = label.float() * 8 - 4  # +4 inside, -4 outside
    logits[0, 2] = -4.0  # ET missed entirely
    pred = onehot_from_logits(logits, multilabel=True)
    assert pred.shape == label.shape and pred[0, 1].sum() == wt.sum()
    s = segmentation_scores(pred, label, (1, 1, 1), ["TC", "WT", "ET"], include_background=True)[0]
    assert s.dice == {"TC": 1.0, "WT": 1.0, "ET": 0.0}
    assert s.hd95["ET"] == pytest.approx(math.sqrt(100 + 100 + 36))


def test_labelmap_logits_argmax_onehot():
    label = torch.tensor([[[0, 1], [2, 2]]])  # [1, 2, 2]
    logits = torch.nn.functional.one_hot(label, 3).permute(0, 3, 1, 2).float() * 5  # [1, 3, 2, 2]
    onehot = onehot_from_logits(logits, multilabel=False)
    assert torch.equal(onehot, onehot_from_labelmap(label[:, None], 3))
    assert onehot[0, :, 1, 0].tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="label values"):
        onehot_from_labelmap(label, 2)


def test_summary_means_subsets_and_metric_files(tmp_path):
    names = [f"organ{i}" for i in range(13)]
    rng = np.random.default_rng(0)
    shape = (10, 10, 6)
    cases = []
    for case in range(3):
        lab = rng.integers(0, 14, size=(1, *shape))
        pred = np.where(rng.random((1, *shape)) < 0.8, lab, rng.integers(0, 14, size=(1, *shape)))
        cases += segmentation_scores(onehot_from_labelmap(pred, 14), onehot_from_labelmap(lab, 14), (1, 1, 2), names,
                                     case_ids=[f"c{case}"])
    subsets = {"8-organ": list(BTCV_8_ORGAN_INDICES), "two": ["organ0", 1]}
    summary = summarize_segmentation(cases, names, subsets=subsets)
    dice = np.array([[c.dice[n] for n in names] for c in cases])  # [cases, classes]
    assert summary["n_cases"] == 3
    assert summary["classes"]["organ4"]["dice"] == pytest.approx(dice[:, 4].mean())
    assert summary["classes"]["organ4"]["dice_std"] == pytest.approx(dice[:, 4].std())
    # mean over classes of per-class means == the official per-volume class mean averaged over volumes
    assert summary["mean"]["dice"] == pytest.approx(dice.mean(1).mean())
    assert summary["subsets"]["8-organ"]["dice"] == pytest.approx(dice[:, list(BTCV_8_ORGAN_INDICES)].mean())
    assert summary["subsets"]["8-organ"]["classes"] == [names[i] for i in BTCV_8_ORGAN_INDICES]
    assert summary["subsets"]["two"]["classes"] == ["organ0", "organ1"]
    with pytest.raises(ValueError, match="unknown class"):
        summarize_segmentation(cases, names, subsets={"bad": ["liver"]})

    summary["cases"][0]["hd95"]["organ0"] = float("nan")  # strict JSON: NaN must become null
    from selfmedmae.tasks.segmentation import Segmentation

    metrics = dict(summary, split="test")
    text = write_metrics(metrics, tmp_path, Segmentation.rows(metrics))
    data = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert data["cases"][0]["hd95"]["organ0"] is None
    assert data["subsets"]["8-organ"]["dice"] == pytest.approx(summary["subsets"]["8-organ"]["dice"])
    assert (tmp_path / "metrics.md").read_text() == text
    assert "| organ12 |" in text and "**8-organ (8 classes)**" in text and "- split: test" in text
    assert f"{summary['mean']['dice']:.4f}" in text


# ---------------------------------------------------------------- classification
def test_auc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 40))
        targets = rng.integers(0, 2, n)
        if targets.min() == targets.max():
            continue
        scores = rng.integers(0, 5, n).astype(float)  # few distinct values: many ties
        assert roc_auc(targets, scores) == pytest.approx(ref_auc(targets, scores), abs=1e-12)
        fpr, tpr = roc_curve(targets, scores)
        assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0
        assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
        area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoid rule
        assert area == pytest.approx(ref_auc(targets, scores), abs=1e-12)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_multilabel_auc_single_valued_label_is_nan_and_excluded():
    targets = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1], [1, 0, 1]])
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.4, 0.2], [0.7, 0.3, 0.9], [0.7, 0.2, 0.1], [0.4, 0.8, 0.5]])
    out = multilabel_auc(targets, scores, ["a", "neg", "pos"])
    assert out["labels"]["a"]["auc"] == pytest.approx(ref_auc(targets[:, 0], scores[:, 0]))
    assert math.isnan(out["labels"]["neg"]["auc"]) and math.isnan(out["labels"]["pos"]["auc"])
    assert out["mean_auc"] == pytest.approx(out["labels"]["a"]["auc"])  # not dragged down by 0s
    assert out["n_labels_excluded"] == 2 and out["excluded_labels"] == ["neg", "pos"]
    assert out["labels"]["a"]["n_pos"] == 3 and out["labels"]["a"]["n_neg"] == 2
    assert math.isnan(roc_auc(targets[:, 1], scores[:, 1]))
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_curve(targets[:, 1], scores[:, 1])
    with pytest.raises(ValueError, match="0/1"):
        roc_auc([0, 2, 1], [0.1, 0.2, 0.3])
