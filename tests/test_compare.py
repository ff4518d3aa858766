"""The MAE-vs-scratch table and verdict, on small made-up metrics dicts (what `evaluate` writes)."""
from __future__ import annotations

import pytest

from selfmedmae.experiments.compare import compare, headline, markdown, table, verdict


def seg(anterior: float, posterior: float, n: int = 34) -> dict:
    classes = {"Anterior": {"dice": anterior, "hd95": 3.0}, "Posterior": {"dice": posterior, "hd95": 4.0}}
    return {"task": "segmentation", "n_cases": n, "hd_percentile": 95.0, "classes": classes,
            "mean": {"dice": (anterior + posterior) / 2, "hd95": 3.5}, "subsets": {}}


def cls(aucs: dict, n: int = 111) -> dict:
    return {"task": "classification", "n_samples": n, "labels": {k: {"auc": v} for k, v in aucs.items()},
            "mean_auc": sum(aucs.values()) / len(aucs)}


def test_a_clear_gain_is_named_with_its_size_and_the_cases():
    c = compare([seg(0.80, 0.78), seg(0.81, 0.79), seg(0.80, 0.80)],
                [seg(0.76, 0.75), seg(0.77, 0.75), seg(0.76, 0.74)])
    text = verdict(c)
    assert text.startswith("MAE beats scratch by +0.042 mean Dice") and "34 test cases, 3 seeds" in text
    md = table(c)
    assert "| Dice Anterior | 0.803 ± 0.006 | 0.763 ± 0.006 | +0.040 |" in md
    assert "| **Dice mean** |" in md and "HD95" not in md


def test_a_loss_is_said_plainly():
    c = compare([seg(0.70, 0.68)], [seg(0.73, 0.71)])
    assert verdict(c).startswith("MAE does not beat scratch here: -0.030 mean Dice")
    assert "1 seed" in verdict(c) and "MAE 0.690 vs scratch 0.720" in verdict(c)
    assert "| Dice mean | " not in table(c) and "0.690 | 0.720 | -0.030" in table(c)  # one seed: no ± part


def test_a_gain_inside_the_seed_spread_is_not_called_a_gain():
    c = compare([seg(0.80, 0.80), seg(0.70, 0.70)], [seg(0.72, 0.72), seg(0.77, 0.77)])
    text = verdict(c)
    assert "within the seed-to-seed spread" in text and "no clear gain" in text and "beats" not in text


def test_a_tie():
    assert verdict(compare([seg(0.7, 0.7)], [seg(0.7, 0.7)])).startswith("MAE and scratch tie")


def test_classification_reports_auc_and_chance():
    c = compare([cls({"Effusion": 0.60, "Nodule": 0.52})], [cls({"Effusion": 0.47, "Nodule": 0.49})])
    assert headline(cls({"A": 0.6}))[0] == "mean AUC"
    text = verdict(c)
    assert "MAE beats scratch by +0.080 mean AUC" in text and "111 test images" in text
    assert "Against chance (0.5): MAE +0.060, scratch -0.020" in text
    md = markdown(c, "cxr14")
    assert "| AUC Effusion | 0.600 | 0.470 | +0.130 |" in md and "**Verdict:**" in md


def test_btcv_subset_is_the_headline_and_unpaired_runs_are_refused():
    m = seg(0.8, 0.7)
    m["subsets"] = {"8 organs": {"dice": 0.77}}
    assert headline(m) == ("mean Dice (8 organs)", 0.77)
    with pytest.raises(ValueError):
        compare([m, m], [m])


def test_a_loss_inside_the_spread_and_a_single_seed_say_so():
    c = compare([seg(0.70, 0.70), seg(0.80, 0.80)], [seg(0.72, 0.72), seg(0.79, 0.79)])
    assert "does not beat scratch" in verdict(c) and "within the seed-to-seed spread" in verdict(c)
    assert "One seed only" in verdict(compare([seg(0.8, 0.8)], [seg(0.7, 0.7)]))


# --- the verdict from the paired interval (metrics with per-case values, as `evaluate` writes them) ----------

def seg_cases(dice: "list[float]") -> dict:
    """A segmentation metrics dict of one class whose per-case Dice are ``dice``."""
    m = seg(sum(dice) / len(dice), sum(dice) / len(dice), n=len(dice))
    m["cases"] = [{"case_id": f"case{i}", "dice": {"Anterior": d, "Posterior": d}} for i, d in enumerate(dice)]
    return m


def test_a_gain_on_the_same_cases_is_named_with_its_interval():
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.9, 40)
    c = compare([seg_cases(list(base + 0.03 + rng.normal(0, 0.01, 40)))], [seg_cases(list(base))])
    text = verdict(c)
    assert text.startswith("MAE ahead of scratch by 0.0") and "95 % CI" in text
    assert "paired over the same 40 test cases" in text and c.paired["lo"] > 0
    assert abs(c.paired["diff"] - 0.03) < 0.01


def test_no_detectable_difference_is_said_so():
    import numpy as np

    rng = np.random.default_rng(1)
    base = rng.uniform(0.6, 0.9, 30)
    noisy = list(base + rng.normal(0, 0.05, 30))
    c = compare([seg_cases(noisy)], [seg_cases(list(base))])
    assert c.paired["lo"] < 0 < c.paired["hi"]
    assert verdict(c).startswith("No difference detectable between MAE and scratch with this test set")


def test_classification_is_paired_over_images_on_labels_with_enough_positives():
    import numpy as np

    rng = np.random.default_rng(2)
    n = 200
    y = (rng.random((n, 3)) < [0.3, 0.3, 0.01]).astype(int)  # the third label: too few positives
    good = np.clip(y * 0.6 + rng.random((n, 3)) * 0.5, 0, 1)
    bad = rng.random((n, 3))

    def cls_images(scores):
        m = cls({"A": 0.5, "B": 0.5, "C": 0.5}, n=n)
        m["images"] = {"ids": [str(i) for i in range(n)], "targets": y.tolist(), "scores": scores.tolist()}
        return m

    c = compare([cls_images(good)], [cls_images(bad)])
    assert c.paired["labels"] == ["A", "B"] and c.paired["lo"] > 0.1
    text = verdict(c)
    assert text.startswith("MAE ahead of scratch by") and "mean AUC (2 labels with ≥ 5 positives)" in text
    assert "paired over the same 200 test images" in text and "Against chance (0.5)" in text
