"""`selfmedmae evaluate`: per-class tables from tiny checkpoints on real and synthetic data, and known answers
from models whose outputs are fixed (constant logits), checked against numbers computed here with numpy."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from selfmedmae.cli import main
from selfmedmae.data import build
from selfmedmae.data.synthetic import make_brats, make_btcv
from selfmedmae.data.synthetic_2d import make_cxr14_like
from selfmedmae.data.transforms_3d import eval_transforms
from selfmedmae.inference.forward import load_run
from selfmedmae.metrics.dice import BRATS_HD_PENALTY_MM
from selfmedmae.models.checkpoint import atomic_save, native
from tiny_runs import HIPPOCAMPUS, REPO, ConstantLogits, hippocampus_subset, tiny_checkpoint

HIPPO_CFG = str(REPO / "configs" / "_data" / "hippocampus.yaml")
ROI16 = "data.roi_size=[16,16,16]"


@pytest.fixture(scope="module")
def btcv_root(tmp_path_factory):
    return make_btcv(tmp_path_factory.mktemp("btcv"), n=4, size=(40, 40, 12), seed=3)


def test_evaluate_real_hippocampus_prints_and_writes_per_class_metrics(tmp_path, capsys, precision):
    if not HIPPOCAMPUS.is_dir():
        pytest.skip(f"{HIPPOCAMPUS} is absent")
    root = hippocampus_subset(tmp_path / "hip")
    ckpt = tiny_checkpoint(tmp_path / "run", HIPPO_CFG, [f"data.root={root}", ROI16, "data.val_fraction=0.34",
                                                         "data.test_fraction=0.34"])
    # resampled to 2 mm here (the run used the files' 1 mm): 8 windows a case, and the spacing must follow
    assert main(["evaluate", str(ckpt), "eval.split=all", "eval.overlap=0", "data.spacing=[2,2,2]",
                 "--figures", "1", f"run.precision={precision}"]) == 0
    printed = capsys.readouterr().out
    assert "| Anterior |" in printed and "| Posterior |" in printed and "**mean (2 classes)**" in printed
    out = tmp_path / "run" / "eval_all"  # the default: <run>/eval_<split>
    m = json.loads((out / "metrics.json").read_text())
    assert (out / "metrics.md").read_text() in printed
    assert m["task"] == "segmentation" and m["n_cases"] == 3 and m["split"] == "all"
    assert list(m["classes"]) == ["Anterior", "Posterior"]
    for name, c in m["classes"].items():
        per_case = [case["dice"][name] for case in m["cases"]]
        assert c["dice"] == pytest.approx(np.mean(per_case)) and 0.0 <= c["dice"] <= 1.0
        assert c["hd95"] == pytest.approx(np.mean([case["hd95"][name] for case in m["cases"]])) and c["hd95"] >= 0
    assert m["mean"]["dice"] == pytest.approx(np.mean([c["dice"] for c in m["classes"].values()]))
    assert all(case["spacing"] == pytest.approx([2.0, 2.0, 2.0]) for case in m["cases"])  # the evaluated grid
    assert len(list((out / "figures").glob("*.png"))) == 1


def test_evaluate_btcv_reports_the_8_organ_mean_next_to_the_13(tmp_path, btcv_root, capsys):
    ckpt = tiny_checkpoint(tmp_path / "run", str(REPO / "configs" / "_data" / "btcv.yaml"),
                           [f"data.root={btcv_root}", ROI16])
    out = tmp_path / "eval"
    assert main(["evaluate", str(ckpt), "eval.split=test", "--out", str(out), "--figures", "0"]) == 0
    printed = capsys.readouterr().out
    assert "**mean (13 classes)**" in printed and "**8 organs (8 classes)**" in printed
    m = json.loads((out / "metrics.json").read_text())
    names = build(load_run(ckpt).cfg.data).labels.names  # background first, label value = index
    assert list(m["classes"]) == names[1:] and m["n_cases"] == 2  # the published test ids among the 4
    subset = m["subsets"]["8 organs"]
    assert subset["classes"] == [names[v] for v in (1, 2, 3, 4, 6, 7, 8, 11)]
    assert subset["dice"] == pytest.approx(np.mean([m["classes"][n]["dice"] for n in subset["classes"]]))
    assert m["mean"]["dice"] == pytest.approx(np.mean([c["dice"] for c in m["classes"].values()]))
    assert all(case["spacing"] == pytest.approx([1.5, 1.5, 2.0]) for case in m["cases"])  # resampled grid
    assert not (out / "figures").exists()


def _preprocessed(cfg, split):
    transforms = eval_transforms(cfg.data)
    return [transforms(item) for item in build(cfg.data).items(split)]


def evaluate_segmentation(run, split, out_dir, figures=0):
    """The segmentation task's metrics of ``run`` on ``split`` (what ``evaluate`` writes to metrics.json)."""
    from selfmedmae.tasks.segmentation import Segmentation

    data = build(run.cfg.data, run.run_dir)
    return Segmentation(data.labels).evaluate(run, data, split, out_dir, figures)


def test_known_answers_of_a_model_predicting_one_class_everywhere(tmp_path, btcv_root):
    ckpt = tiny_checkpoint(tmp_path / "run", str(REPO / "configs" / "_data" / "btcv.yaml"),
                           [f"data.root={btcv_root}", ROI16])
    run = load_run(ckpt, ["eval.split=test"])
    run.model = ConstantLogits([0.0, 5.0] + [-5.0] * 12)  # spleen (label 1) at every voxel
    m = evaluate_segmentation(run, "test", tmp_path / "eval", figures=0)
    for item, case in zip(_preprocessed(run.cfg, "test"), m["cases"]):
        label = item["label"].numpy()[0]
        n = label.size
        assert case["dice"]["spleen"] == pytest.approx(2 * (label == 1).sum() / ((label == 1).sum() + n), rel=1e-5)
        diagonal = math.sqrt(sum((s * d) ** 2 for s, d in zip(label.shape, (1.5, 1.5, 2.0))))
        for value, name in enumerate(list(m["classes"])[1:], start=2):  # never predicted
            present = bool((label == value).any())
            assert case["dice"][name] == (0.0 if present else 1.0)
            assert case["hd95"][name] == pytest.approx(diagonal if present else 0.0, rel=1e-5)


@pytest.mark.parametrize("logit", [10.0, -10.0])
def test_brats_regions_and_the_brats_penalty(tmp_path, logit):
    root = make_brats(tmp_path / "brats", n=4, size=(24, 24, 16), seed=4)
    ckpt = tiny_checkpoint(tmp_path / "run", str(REPO / "configs" / "_data" / "brats.yaml"),
                           [f"data.root={root}", ROI16, "data.val_fraction=0.25", "data.test_fraction=0.25"])
    run = load_run(ckpt)
    run.model = ConstantLogits([logit] * 3)  # all regions everywhere (10) or nowhere (-10)
    m = evaluate_segmentation(run, "val", tmp_path / "eval", figures=1)
    assert list(m["classes"]) == ["TC", "WT", "ET"] and "373.13" in m["hd_penalty"]
    for item, case in zip(_preprocessed(run.cfg, "val"), m["cases"]):
        regions = item["label"].numpy() > 0.5  # [3, *S]
        for k, name in enumerate(("TC", "WT", "ET")):
            size, n = regions[k].sum(), regions[k].size
            assert size > 0
            if logit > 0:
                assert case["dice"][name] == pytest.approx(2 * size / (size + n), rel=1e-5)
            else:
                assert case["dice"][name] == 0.0 and case["hd95"][name] == BRATS_HD_PENALTY_MM
    assert len(list((tmp_path / "eval" / "figures").glob("*.png"))) == 1


def _auc_by_pairs(t, s):
    pos, neg = s[t == 1], s[t == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_evaluate_classification_auc_matches_its_own_scores(tmp_path, capsys, precision):
    root = tmp_path / "cxr"
    make_cxr14_like(root, n_images=40, size=48, seed=1)
    ckpt = tiny_checkpoint(tmp_path / "run", str(REPO / "configs" / "_data" / "cxr14.yaml"),
                           [f"data.root={root}", "data.image_size=40", "data.crop_size=32"])
    assert main(["evaluate", str(ckpt), "eval.split=test", f"run.precision={precision}"]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "run" / "eval_test"
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "classification" and len(m["labels"]) == 14 and "| Effusion |" in printed
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == m["n_samples"] == len((root / "test_list.txt").read_text().split())
    aucs = []
    for name, v in m["labels"].items():
        t = np.array([float(r[f"{name} (target)"]) for r in rows])
        s = np.array([float(r[name]) for r in rows])
        expected = _auc_by_pairs(t, s)
        assert (v["auc"] is None and math.isnan(expected)) or v["auc"] == pytest.approx(expected, abs=1e-5)
        aucs += [] if math.isnan(expected) else [expected]
    assert m["mean_auc"] == pytest.approx(np.mean(aucs), abs=1e-5)
    assert (out / "figures" / "roc_curves.png").stat().st_size > 10_000


def test_unusable_checkpoints_and_mismatched_data_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    assert main(["evaluate", str(missing)]) == 2
    assert f"{missing}: checkpoint file not found" in capsys.readouterr().err
    mae = atomic_save(native("mae", {"encoder": {}}, {}), tmp_path / "mae.pt")
    assert main(["evaluate", str(mae)]) == 2
    assert f"{mae}: a 'mae' checkpoint" in capsys.readouterr().err
    root = make_brats(tmp_path / "brats", n=4, size=(16, 16, 16), seed=5)
    ckpt = tiny_checkpoint(tmp_path / "run", str(REPO / "configs" / "_data" / "brats.yaml"),
                           [f"data.root={root}", ROI16])
    assert main(["evaluate", str(ckpt), "data.format=msd", "eval.nope=1"]) == 2
    assert "eval.nope: unknown config key" in capsys.readouterr().err
    assert main(["evaluate", str(ckpt), "data.format=msd"]) == 2  # 4 MSD labels vs 3 region outputs
    assert "the model has 3 outputs but the data has 4 classes" in capsys.readouterr().err
