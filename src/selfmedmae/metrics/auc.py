"""Classification metrics: ROC AUC per label (multi-label CXR14) and ROC curves, in numpy.

The paper reports the mean over the 14 ChestX-ray14 labels of per-label ROC AUC. The official code uses
sklearn's `roc_auc_score` and silently sets the AUC of a label whose targets are all one value to 0, which drags
the mean down. Here such a label gets NaN, is left out of the mean, and the number left out is reported.

AUC is the Mann-Whitney statistic: the probability that a random positive scores above a random negative,
ties counting one half. With average ranks r over all N scores:
    AUC = (sum of r over positives - P (P + 1) / 2) / (P * N_neg).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _binary_targets(targets: Any, name: str = "targets") -> np.ndarray:
    t = np.asarray(targets, dtype=np.float64).ravel()
    if not np.all((t == 0) | (t == 1)):
        raise ValueError(f"{name} must be 0/1, got values {np.unique(t)[:5].tolist()}...")
    return t.astype(bool)


def _scores(scores: Any, n: int) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.shape[0] != n:
        raise ValueError(f"{s.shape[0]} scores for {n} targets")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    return s


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of values, tied values sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of the last member of each tie group
    return (last - (counts - 1) / 2.0)[inverse.ravel()]


def _counted(targets: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Checked binary targets [N] and scores [N], and the numbers of positives and negatives."""
    t = _binary_targets(targets)
    s = _scores(scores, t.shape[0])
    n_pos = int(t.sum())
    return t, s, n_pos, t.shape[0] - n_pos


def roc_auc(targets: Any, scores: Any) -> float:
    """ROC AUC of scores for binary targets [N]; NaN when the targets are all 0 or all 1."""
    t, s, n_pos, n_neg = _counted(targets, scores)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = average_ranks(s)[t].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(targets: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1).

    Tied scores move in one step (a diagonal segment), so the trapezoid area under (fpr, tpr) equals `roc_auc`.
    Raises ValueError when the targets hold a single class (the curve is undefined).
    """
    t, s, n_pos, n_neg = _counted(targets, scores)
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_curve needs both positive and negative targets")
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    group_end = np.r_[np.nonzero(np.diff(s))[0], s.shape[0] - 1]  # last index of each distinct score
    tps = np.cumsum(t)[group_end]
    fps = (group_end + 1) - tps
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    return fpr, tpr


def multilabel_auc(targets: Any, scores: Any, label_names: Sequence[str]) -> dict[str, Any]:
    """Per-label AUC of targets / scores [N, K] and their mean over labels with a defined AUC.

    Returns {"task": "classification", "n_samples", "labels": {name: {"auc", "n_pos", "n_neg"}}, "mean_auc",
    "n_labels_excluded", "excluded_labels"}; a label with one target value has auc NaN and is excluded.
    """
    t = np.asarray(targets, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if t.ndim != 2 or t.shape != s.shape:
        raise ValueError(f"targets and scores must both be [N, K], got {list(t.shape)} and {list(s.shape)}")
    if len(label_names) != t.shape[1]:
        raise ValueError(f"{len(label_names)} label names for {t.shape[1]} columns")
    labels: dict[str, dict[str, float | int]] = {}
    for k, name in enumerate(label_names):
        n_pos = int((t[:, k] == 1).sum())
        labels[name] = {"auc": roc_auc(t[:, k], s[:, k]), "n_pos": n_pos, "n_neg": int(t.shape[0] - n_pos)}
    excluded = [name for name, v in labels.items() if np.isnan(v["auc"])]
    defined = [v["auc"] for v in labels.values() if not np.isnan(v["auc"])]
    return {"task": "classification", "n_samples": int(t.shape[0]), "labels": labels,
            "mean_auc": float(np.mean(defined)) if defined else float("nan"),
            "n_labels_excluded": len(excluded), "excluded_labels": excluded}
