"""Confidence intervals and paired comparisons in metrics/stats, checked against closed forms and brute force."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from selfmedmae.metrics import delong
from selfmedmae.metrics.stats import (bootstrap_ci, bootstrap_mean_ci, delong_auc_ci, delong_paired, format_ci,
                                      multilabel_auc_ci, paired_bootstrap_diff, paired_multilabel_auc, verdict)


def brute_psi(y, s):
    """Pairwise kernel [positives, negatives]: 1 when the positive scores higher, 1/2 on a tie, else 0."""
    y = np.asarray(y).astype(bool)
    pos, neg = s[y], s[~y]
    return (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])


def brute_auc(y, s):
    return float(brute_psi(y, s).mean())


def brute_delong_components(y, s):
    """DeLong's structural components by pairwise counting: per positive [m] and per negative [n]."""
    psi = brute_psi(y, s)
    return psi.mean(axis=1), psi.mean(axis=0)


def binormal(rng, n, shift, prevalence=0.4):
    y = (rng.random(n) < prevalence).astype(int)
    return y, shift * y + rng.normal(size=n)


# ------------------------------------------------------------------------------------------ bootstrap_ci

def test_bootstrap_ci_matches_normal_interval_for_a_normal_sample():
    x = np.random.default_rng(0).normal(0.7, 0.1, 400)
    r = bootstrap_ci(x)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    width = 2 * half
    assert r["mean"] == pytest.approx(x.mean())
    assert abs(r["lo"] - (x.mean() - half)) < 0.15 * width
    assert abs(r["hi"] - (x.mean() + half)) < 0.15 * width
    assert r["n"] == 400 and r["n_dropped"] == 0 and r["level"] == 0.95 and r["method"] == "bootstrap"
    narrower = bootstrap_ci(x, level=0.5)
    assert r["lo"] < narrower["lo"] < narrower["hi"] < r["hi"]


def test_bootstrap_ci_is_the_percentile_interval_of_pcg64_resamples():
    x = np.random.default_rng(20).normal(size=50)
    rng = np.random.Generator(np.random.PCG64(3))
    means = x[rng.integers(0, 50, size=(1000, 50))].mean(axis=1)
    r = bootstrap_ci(x, n_boot=1000, level=0.9, seed=3)
    assert (r["lo"], r["hi"]) == pytest.approx(tuple(np.quantile(means, [0.05, 0.95])), abs=1e-12)


def test_bootstrap_ci_drops_nan_cases_and_counts_them():
    x = np.random.default_rng(1).normal(size=50)
    with_nan = np.insert(x, [0, 10, 50], np.nan)
    r, clean = bootstrap_ci(with_nan), bootstrap_ci(x)
    assert r["n"] == 50 and r["n_dropped"] == 3
    assert (r["mean"], r["lo"], r["hi"]) == (clean["mean"], clean["lo"], clean["hi"])


def test_bootstrap_ci_is_fixed_by_its_seed():
    x = np.random.default_rng(2).normal(size=60)
    assert bootstrap_ci(x, seed=5) == bootstrap_ci(x, seed=5)
    assert bootstrap_ci(x, seed=5)["lo"] != bootstrap_ci(x, seed=6)["lo"]


def test_bootstrap_ci_edge_cases():
    empty = bootstrap_ci([np.nan, np.nan])
    assert empty["n"] == 0 and empty["n_dropped"] == 2
    assert all(math.isnan(empty[k]) for k in ("mean", "lo", "hi"))
    assert all(math.isnan(bootstrap_ci([])[k]) for k in ("mean", "lo", "hi"))
    one = bootstrap_ci([0.3, np.nan])
    assert one["n"] == 1 and one["mean"] == one["lo"] == one["hi"] == 0.3
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, np.inf])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], level=1.0)


def test_bootstrap_mean_ci_is_mean_of_class_means():
    rng = np.random.default_rng(3)
    m = rng.normal([0.9, 0.7, 0.5], 0.1, size=(80, 3))
    m[rng.random(m.shape) < 0.1] = np.nan
    m[5] = np.nan  # a case with no defined value
    r = bootstrap_mean_ci(m)
    assert r["mean"] == pytest.approx(np.mean(np.nanmean(m, axis=0)))
    assert r["n"] == 79 and r["n_dropped"] == 1
    assert r["lo"] < r["mean"] < r["hi"]
    # one class: the same statistic, the same resamples, so the same interval as bootstrap_ci
    col = m[:, :1]
    assert bootstrap_mean_ci(col, seed=4) == bootstrap_ci(col[:, 0], seed=4)


# --------------------------------------------------------------------------------- paired_bootstrap_diff

def test_paired_bootstrap_diff_finds_a_known_shift():
    rng = np.random.default_rng(4)
    b = rng.normal(0.7, 0.1, 200)
    a = b + 0.05 + rng.normal(0, 0.02, 200)
    r = paired_bootstrap_diff(a, b)
    assert r["diff"] == pytest.approx(np.mean(a - b))
    assert abs(r["diff"] - 0.05) < 0.006
    assert 0 < r["lo"] < 0.05 < r["hi"]
    assert r["p"] < 0.01 and r["test"] == "sign-flip permutation"
    flipped = paired_bootstrap_diff(b, a)
    assert flipped["diff"] == pytest.approx(-r["diff"]) and flipped["hi"] < 0


def test_paired_bootstrap_diff_covers_zero_without_a_difference():
    rng = np.random.default_rng(5)
    covered, small_p = 0, 0
    for _ in range(100):
        a, b = rng.normal(0.7, 0.1, (2, 40))
        r = paired_bootstrap_diff(a, b, n_boot=400, seed=int(rng.integers(1 << 30)))
        covered += r["lo"] <= 0 <= r["hi"]
        small_p += r["p"] < 0.05
    assert 85 <= covered <= 100
    assert small_p <= 12


def test_paired_bootstrap_diff_identical_models_and_pairs_with_nan():
    x = np.random.default_rng(6).normal(size=30)
    same = paired_bootstrap_diff(x, x)
    assert same["diff"] == same["lo"] == same["hi"] == 0.0 and same["p"] == 1.0
    a, b = x + 1.0, x.copy()
    a[0], b[1] = np.nan, np.nan
    r = paired_bootstrap_diff(a, b)
    assert r["n"] == 28 and r["n_dropped"] == 2 and r["diff"] == pytest.approx(1.0)


def test_paired_bootstrap_diff_2d_is_mean_over_classes_of_paired_class_means():
    rng = np.random.default_rng(7)
    b = rng.normal([0.8, 0.6], 0.1, size=(60, 2))
    a = b + [0.02, 0.10] + rng.normal(0, 0.01, size=(60, 2))
    a[3, 0] = np.nan  # dropped from class 0 on both sides
    b[4, 1] = np.nan
    r = paired_bootstrap_diff(a, b)
    d = a - b
    assert r["diff"] == pytest.approx(np.mean(np.nanmean(d, axis=0)))
    assert r["n"] == 60 and r["lo"] > 0 and r["p"] < 0.01


def test_sign_flip_p_is_exact_for_few_cases():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 1.5, 3.2, 2.0])
    d = a - b
    flips = [abs(np.mean(np.array(s) * d)) for s in itertools.product([-1, 1], repeat=4)]
    expected = np.mean([f >= abs(d.mean()) - 1e-12 for f in flips])
    assert paired_bootstrap_diff(a, b)["p"] == pytest.approx(expected)


# ------------------------------------------------------------------------------------------------ DeLong

def test_delong_auc_equals_pairwise_count_and_sklearn_with_ties():
    rng = np.random.default_rng(8)
    y, s = binormal(rng, 300, 1.0)
    s = np.round(s, 1)  # many ties
    r = delong_auc_ci(y, s)
    assert r["auc"] == pytest.approx(brute_auc(y, s), abs=1e-12)
    assert r["positives"] == y.sum() and r["negatives"] == (1 - y).sum() and r["method"] == "delong"
    assert r["lo"] < r["auc"] < r["hi"]
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    assert r["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)


def test_delong_se_equals_structural_components_by_brute_force():
    rng = np.random.default_rng(9)
    y, s = binormal(rng, 150, 0.8)
    s = np.round(s, 1)
    v10, v01 = brute_delong_components(y, s)
    se = math.sqrt(v10.var(ddof=1) / v10.size + v01.var(ddof=1) / v01.size)
    assert delong_auc_ci(y, s)["se"] == pytest.approx(se, rel=1e-10)


def test_delong_se_agrees_with_bootstrap_and_hanley_mcneil():
    rng = np.random.default_rng(10)
    y, s = binormal(rng, 300, 1.2)
    r = delong_auc_ci(y, s)
    boot = []
    for _ in range(400):
        idx = rng.integers(0, y.size, y.size)
        boot.append(brute_auc(y[idx], s[idx]))
    assert r["se"] == pytest.approx(np.std(boot, ddof=1), rel=0.2)
    a, m, n = r["auc"], r["positives"], r["negatives"]
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    hanley = math.sqrt((a * (1 - a) + (m - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (m * n))
    assert r["se"] == pytest.approx(hanley, rel=0.3)


def test_delong_interval_is_normal_on_the_logit_scale():
    rng = np.random.default_rng(21)
    y, s = binormal(rng, 80, 1.0)
    r = delong_auc_ci(y, s, level=0.9)
    logit, z = math.log(r["auc"] / (1 - r["auc"])), 1.6448536269514722
    half = z * r["se"] / (r["auc"] * (1 - r["auc"]))
    assert r["lo"] == pytest.approx(1 / (1 + math.exp(-(logit - half))), rel=1e-10)
    assert r["hi"] == pytest.approx(1 / (1 + math.exp(-(logit + half))), rel=1e-10)
    perfect = delong_auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert perfect["auc"] == perfect["lo"] == perfect["hi"] == 1.0


def test_delong_auc_nan_when_a_class_is_absent():
    s = np.arange(10.0)
    for y in (np.zeros(10), np.ones(10)):
        r = delong_auc_ci(y, s)
        assert all(math.isnan(r[k]) for k in ("auc", "lo", "hi", "se"))
    one_pos = delong_auc_ci(np.r_[1, np.zeros(9)], s)
    assert one_pos["auc"] == 0.0 and math.isnan(one_pos["se"]) and one_pos["positives"] == 1
    with pytest.raises(ValueError):
        delong_auc_ci([0, 1, 2], [0.1, 0.2, 0.3])


def test_delong_paired_identical_scores():
    rng = np.random.default_rng(11)
    y, s = binormal(rng, 100, 1.0)
    r = delong_paired(y, s, s)
    assert r["diff"] == 0.0 and r["se"] == 0.0 and r["p"] == 1.0 and r["z"] == 0.0
    monotone = delong_paired(y, s, np.exp(s))  # the same ranking, so the same AUC
    assert monotone["diff"] == pytest.approx(0.0, abs=1e-12) and monotone["p"] == 1.0


def test_delong_paired_finds_a_strongly_better_model():
    rng = np.random.default_rng(12)
    n = 400
    y = (rng.random(n) < 0.5).astype(int)
    a, b = 2.0 * y + rng.normal(size=n), 0.5 * y + rng.normal(size=n)
    true_diff = 0.5 * (math.erf(2.0 / 2) - math.erf(0.5 / 2))  # Phi(2/sqrt2) - Phi(0.5/sqrt2)
    r = delong_paired(y, a, b)
    assert r["diff"] == pytest.approx(brute_auc(y, a) - brute_auc(y, b), abs=1e-12)
    assert r["diff"] > 0 and r["p"] < 0.01 and r["z"] > 2.6
    assert r["lo"] - 0.02 < true_diff < r["hi"] + 0.02
    assert r["lo"] < r["diff"] < r["hi"]


def test_delong_paired_covariance_matches_brute_force():
    rng = np.random.default_rng(13)
    y, a = binormal(rng, 120, 1.0)
    b = a + rng.normal(scale=0.8, size=y.size)  # correlated with a
    (pa, na), (pb, nb) = brute_delong_components(y, a), brute_delong_components(y, b)
    var = np.var(pa - pb, ddof=1) / pa.size + np.var(na - nb, ddof=1) / na.size
    assert delong_paired(y, a, b)["se"] == pytest.approx(math.sqrt(var), rel=1e-10)


def test_delong_paired_interval_covers_zero_without_a_difference():
    rng = np.random.default_rng(14)
    covered = 0
    for _ in range(200):
        y = (rng.random(100) < 0.4).astype(int)
        shared = rng.normal(size=100)  # the two models agree in part, as real models do
        a = y + shared + rng.normal(size=100)
        b = y + shared + rng.normal(size=100)
        r = delong_paired(y, a, b)
        assert r["hi"] - r["diff"] == pytest.approx(1.959963984540054 * r["se"])
        covered += r["lo"] <= 0 <= r["hi"]
    assert 180 <= covered <= 198


# ------------------------------------------------------------------------------------------- multi-label

def multilabel_data(rng, n=400):
    Y = np.zeros((n, 4), dtype=int)
    Y[rng.choice(n, 120, replace=False), 0] = 1
    Y[rng.choice(n, 40, replace=False), 1] = 1
    Y[rng.choice(n, 3, replace=False), 2] = 1  # few positives
    S = 1.5 * Y + rng.normal(size=Y.shape)  # label 3 has no positive
    return Y, S


def test_multilabel_auc_ci_flags_few_positives_and_excludes_them():
    rng = np.random.default_rng(15)
    Y, S = multilabel_data(rng)
    names = ["a", "b", "few", "none"]
    r = multilabel_auc_ci(Y, S, names, n_boot=500)
    labels = r["labels"]
    assert [labels[k]["few_positives"] for k in names] == [False, False, True, True]
    assert [labels[k]["positives"] for k in names] == [120, 40, 3, 0]
    for k, name in enumerate(names[:3]):
        assert labels[name]["auc"] == pytest.approx(brute_auc(Y[:, k], S[:, k]), abs=1e-12)
    assert math.isnan(labels["none"]["auc"])
    assert r["mean_eligible"]["labels"] == ["a", "b"] and r["mean_all"]["labels"] == ["a", "b", "few"]
    assert r["mean_eligible"]["mean"] == pytest.approx(np.mean([labels["a"]["auc"], labels["b"]["auc"]]))
    assert r["mean_all"]["mean"] == pytest.approx(np.mean([labels[k]["auc"] for k in ("a", "b", "few")]))
    for key in ("mean_all", "mean_eligible"):
        assert r[key]["lo"] < r[key]["mean"] < r[key]["hi"]
    assert r["min_positives"] == 5
    at_three = multilabel_auc_ci(Y, S, names, min_positives=3, n_boot=50)
    assert not at_three["labels"]["few"]["few_positives"] and at_three["labels"]["none"]["few_positives"]
    assert at_three["mean_eligible"]["labels"] == ["a", "b", "few"]


def test_multilabel_mean_interval_is_a_bootstrap_over_images():
    rng = np.random.default_rng(18)
    Y, S = multilabel_data(rng, n=200)
    r = multilabel_auc_ci(Y, S, ["a", "b", "few", "none"], n_boot=200, seed=9)
    draws = np.random.Generator(np.random.PCG64(9)).integers(0, 200, size=(200, 200))
    means = {"mean_all": [], "mean_eligible": []}
    for idx in draws:
        aucs = [brute_auc(Y[idx, k], S[idx, k]) if 0 < Y[idx, k].sum() < idx.size else np.nan for k in range(3)]
        means["mean_all"].append(np.nanmean(aucs))
        means["mean_eligible"].append(np.mean(aucs[:2]))
    for key, reps in means.items():
        assert (r[key]["lo"], r[key]["hi"]) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])), abs=1e-12)


def test_weighted_auc_equals_auc_of_the_resampled_cases():
    rng = np.random.default_rng(16)
    y, s = binormal(rng, 60, 1.0)
    s = np.round(s, 1)
    idx = rng.integers(0, 60, size=(5, 60))
    weights = np.stack([np.bincount(i, minlength=60) for i in idx]).astype(float)
    got = delong._weighted_aucs(weights, s, y.astype(bool))
    assert got == pytest.approx([brute_auc(y[i], s[i]) for i in idx], abs=1e-12)


def test_paired_multilabel_auc():
    rng = np.random.default_rng(17)
    Y, S_b = multilabel_data(rng)
    S_a = 3.0 * Y + rng.normal(size=Y.shape)
    names = ["a", "b", "few", "none"]
    r = paired_multilabel_auc(Y, S_a, S_b, names, n_boot=500)
    for k, name in enumerate(names[:3]):
        expected = delong_paired(Y[:, k], S_a[:, k], S_b[:, k])
        assert r["labels"][name]["diff"] == pytest.approx(expected["diff"])
        assert r["labels"][name]["p"] == pytest.approx(expected["p"])
    assert r["labels"]["few"]["few_positives"] and math.isnan(r["labels"]["none"]["diff"])
    m = r["mean_eligible"]
    assert m["labels"] == ["a", "b"]
    assert m["diff"] == pytest.approx(np.mean([r["labels"][k]["diff"] for k in ("a", "b")]))
    assert 0 < m["lo"] < m["diff"] < m["hi"] and m["p"] < 0.01
    same = paired_multilabel_auc(Y, S_b, S_b, names, n_boot=200)["mean_eligible"]
    assert same["diff"] == same["lo"] == same["hi"] == 0.0 and same["p"] == 1.0


# -------------------------------------------------------------------------------------------------- text

def test_verdict_wording():
    ahead = {"diff": 0.0234, "lo": 0.0101, "hi": 0.0367, "level": 0.95}
    assert verdict(ahead, a="MAE", b="scratch", metric="mean Dice") == \
        "MAE ahead of scratch by 0.023 mean Dice (95 % CI 0.010 to 0.037)"
    behind = {"diff": -0.0234, "lo": -0.0367, "hi": -0.0101, "level": 0.95}
    assert verdict(behind, a="MAE", b="scratch", metric="AUC") == \
        "MAE behind scratch by 0.023 AUC (95 % CI 0.010 to 0.037)"
    none = {"diff": 0.004, "lo": -0.01, "hi": 0.018, "level": 0.9}
    assert verdict(none, a="MAE", b="scratch", metric="AUC", digits=2) == (
        "no difference detectable between MAE and scratch with this test set: "
        "MAE minus scratch = 0.00 AUC (90 % CI -0.01 to 0.02)")
    real = paired_bootstrap_diff(np.arange(20.0) + 1.0, np.arange(20.0))
    assert verdict(real, a="x", b="y", metric="Dice").startswith("x ahead of y by 1.000 Dice (95 % CI")


def test_format_ci():
    assert format_ci(0.8123, 0.7901, 0.8334) == "0.812 (0.790 to 0.833)"
    assert format_ci(0.5, 0.25, 0.75, digits=1) == "0.5 (0.2 to 0.8)"
    assert format_ci(float("nan"), 0.1, 0.2) == "n/a"
    assert format_ci(0.5, float("nan"), float("nan")) == "0.500 (CI n/a)"
    assert format_ci(-0.0001, -0.01, 0.01) == "0.000 (-0.010 to 0.010)"
