"""ROC AUC with its uncertainty: DeLong, DeLong & Clarke-Pearson (1988) variance of the Mann-Whitney AUC by the
fast midrank algorithm of Sun & Xu (2014); one AUC with a logit-scale interval, the paired test of two
correlated AUCs on the same images, and multi-label AUC (per-label DeLong, bootstrap over images for the mean
over labels, labels with too few positives flagged and left out of the eligible mean). Public names are
re-exported by :mod:`selfmedmae.metrics.stats`."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from selfmedmae.metrics.auc import average_ranks
from selfmedmae.metrics.bootstrap import (_NAN, _bootstrap_p, _check_level, _check_n_boot, _percentile, _rng,
                                         _row_nanmean, _two_sided_p, _weight_blocks, _z)

# --------------------------------------------------------------------------------------------------- DeLong

def _binary(y: Any) -> np.ndarray:
    t = np.asarray(y, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {list(t.shape)}")
    if not np.all((t == 0) | (t == 1)):
        raise ValueError(f"labels must be 0/1, got values {np.unique(t)[:5].tolist()}")
    return t.astype(bool)


def _score_rows(scores: Sequence[Any], n: int) -> np.ndarray:
    s = np.asarray([np.asarray(x, dtype=np.float64) for x in scores])
    if s.ndim != 2 or s.shape[1] != n:
        raise ValueError(f"each score vector must be 1-D with {n} entries (one per label), got {list(s.shape)}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    return s


def _delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs [k] of score rows [k, N] and their DeLong covariance [k, k] (Sun & Xu 2014 midrank algorithm).

    Needs at least one positive and one negative; the covariance is NaN with fewer than two of either.
    """
    pos, neg = scores[:, y], scores[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    tx = np.array([average_ranks(r) for r in pos])  # midranks among positives
    ty = np.array([average_ranks(r) for r in neg])  # midranks among negatives
    tz = np.array([average_ranks(r) for r in np.concatenate([pos, neg], axis=1)])  # midranks among all
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    if m < 2 or n < 2:
        return aucs, np.full((len(aucs), len(aucs)), _NAN)
    v01 = (tz[:, :m] - tx) / n  # per positive: share of negatives scored below it (ties half)
    v10 = 1.0 - (tz[:, m:] - ty) / m  # per negative: share of positives scored above it
    cov = np.atleast_2d(np.cov(v01)) / m + np.atleast_2d(np.cov(v10)) / n
    return aucs, cov


def _auc_interval(auc: float, se: float, level: float) -> tuple[float, float]:
    """Interval for an AUC: normal on the logit scale (stays inside [0, 1]); Wald clipped to [0, 1] at 0 or 1."""
    if not (math.isfinite(auc) and math.isfinite(se)):
        return _NAN, _NAN
    z = _z(level)
    if 0.0 < auc < 1.0 and se > 0.0:
        centre, half = math.log(auc / (1.0 - auc)), z * se / (auc * (1.0 - auc))
        return 1.0 / (1.0 + math.exp(-(centre - half))), 1.0 / (1.0 + math.exp(-(centre + half)))
    return max(0.0, auc - z * se), min(1.0, auc + z * se)


def delong_auc_ci(y: Any, score: Any, *, level: float = 0.95) -> dict[str, Any]:
    """ROC AUC of one score with its DeLong standard error and confidence interval.

    Args:
        y: Binary labels [N], 0 or 1.
        score: Scores [N], higher meaning more likely positive; finite.
        level: Coverage of the interval.

    Returns:
        {"auc" (Mann-Whitney, ties counted half), "lo", "hi" (normal interval on the logit scale), "se"
        (DeLong), "positives", "negatives", "level", "method": "delong"}. "auc" and the interval are NaN when a
        class is absent; "se" and the interval are NaN with fewer than two positives or negatives.
    """
    level = _check_level(level)
    t = _binary(y)
    s = _score_rows([score], t.shape[0])
    m = int(t.sum())
    n = t.shape[0] - m
    out = {"auc": _NAN, "lo": _NAN, "hi": _NAN, "se": _NAN, "positives": m, "negatives": n, "level": level,
           "method": "delong"}
    if m == 0 or n == 0:
        return out
    aucs, cov = _delong(t, s)
    auc, var = float(aucs[0]), float(cov[0, 0])
    se = math.sqrt(max(var, 0.0)) if math.isfinite(var) else _NAN
    lo, hi = _auc_interval(auc, se, level)
    return {**out, "auc": auc, "lo": lo, "hi": hi, "se": se}


def delong_paired(y: Any, score_a: Any, score_b: Any, *, level: float = 0.95) -> dict[str, Any]:
    """Paired DeLong test of two correlated AUCs: two models' scores on the same images.

    Args:
        y: Binary labels [N], 0 or 1.
        score_a: Scores [N] of model a.
        score_b: Scores [N] of model b, on the same images in the same order.
        level: Coverage of the interval of the difference.

    Returns:
        {"diff" (AUC a minus AUC b), "lo", "hi" (Wald interval, clipped to [-1, 1]), "se" (DeLong, with the
        covariance of the two AUCs), "z", "p" (two-sided normal), "auc_a", "auc_b", "positives", "negatives",
        "level", "method": "delong"}. With se 0 and diff 0 (identical rankings) z is 0 and p is 1; z and p are
        NaN when se is 0 but diff is not, and everything is NaN when a class is absent.
    """
    level = _check_level(level)
    t = _binary(y)
    s = _score_rows([score_a, score_b], t.shape[0])
    m = int(t.sum())
    n = t.shape[0] - m
    out = {"diff": _NAN, "lo": _NAN, "hi": _NAN, "se": _NAN, "z": _NAN, "p": _NAN, "auc_a": _NAN,
           "auc_b": _NAN, "positives": m, "negatives": n, "level": level, "method": "delong"}
    if m == 0 or n == 0:
        return out
    aucs, cov = _delong(t, s)
    diff = float(aucs[0] - aucs[1])
    out.update(diff=diff, auc_a=float(aucs[0]), auc_b=float(aucs[1]))
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if not math.isfinite(var):
        return out
    se = math.sqrt(max(var, 0.0))
    if se > 1e-15:
        z = diff / se
    else:
        se, z = 0.0, (0.0 if abs(diff) < 1e-15 else _NAN)
    half = _z(level) * se
    return {**out, "lo": max(-1.0, diff - half), "hi": min(1.0, diff + half), "se": se, "z": z,
            "p": _two_sided_p(z) if math.isfinite(z) else _NAN}


# ---------------------------------------------------------------------------------------------- multi-label

def _label_inputs(Y: Any, scores: Sequence[Any], names: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Checked targets [N, K] (bool) and score matrices [N, K]."""
    y = np.asarray(Y, dtype=np.float64)
    mats = [np.asarray(s, dtype=np.float64) for s in scores]
    if y.ndim != 2 or any(s.shape != y.shape for s in mats):
        shapes = [list(y.shape)] + [list(s.shape) for s in mats]
        raise ValueError(f"Y and scores must all be [images, labels], got shapes {shapes}")
    if len(names) != y.shape[1]:
        raise ValueError(f"{len(names)} label names for {y.shape[1]} columns")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("Y must be 0/1")
    if not all(np.all(np.isfinite(s)) for s in mats):
        raise ValueError("scores contain NaN or inf")
    return y.astype(bool), mats


def _weighted_aucs(weights: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """AUC of scores s [N] for labels t [N] under each row of case weights [b, N]; NaN where a class has none.

    Cases are sorted by score once; within a row, AUC = sum over tie groups of (positive weight) x (negative
    weight below + half the negative weight tied) / (positive weight x negative weight).
    """
    order = np.argsort(s, kind="stable")
    starts = np.r_[0, np.nonzero(np.diff(s[order]))[0] + 1]
    w, pos = weights[:, order], t[order]
    pos_g = np.add.reduceat(w * pos, starts, axis=1)
    neg_g = np.add.reduceat(w * ~pos, starts, axis=1)
    below = np.cumsum(neg_g, axis=1) - neg_g
    denom = pos_g.sum(axis=1) * neg_g.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (pos_g * (below + 0.5 * neg_g)).sum(axis=1) / np.maximum(denom, 1e-300), _NAN)


def _boot_label_aucs(y: np.ndarray, mats: list[np.ndarray], cols: list[int], n_boot: int,
                     seed: int) -> list[np.ndarray]:
    """Per-replicate AUCs [n_boot, len(cols)] of each score matrix, all under the same resamples of the images."""
    out = [np.full((n_boot, len(cols)), _NAN) for _ in mats]
    row = 0
    for w in _weight_blocks(_rng(seed), y.shape[0], n_boot):
        for j, k in enumerate(cols):
            for rep, s in zip(out, mats):
                rep[row:row + w.shape[0], j] = _weighted_aucs(w, s[:, k], y[:, k])
        row += w.shape[0]
    return out


def _label_sets(labels: dict[str, dict[str, Any]], key: str, names: Sequence[str]) -> tuple[list[int], list[int]]:
    """Columns with a defined value under `key`, and those of them not flagged "few_positives"."""
    defined = [k for k, name in enumerate(names) if math.isfinite(labels[name][key])]
    eligible = [k for k in defined if not labels[names[k]]["few_positives"]]
    return defined, eligible


def multilabel_auc_ci(Y: Any, S: Any, names: Sequence[str], *, min_positives: int = 5, level: float = 0.95,
                      n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Per-label AUC with DeLong intervals, and the mean over labels with bootstrap intervals over images.

    Args:
        Y: Labels [images, labels], 0 or 1.
        S: Scores [images, labels].
        names: One name per label column.
        min_positives: Labels with fewer positives are flagged "few_positives" and left out of "mean_eligible".
        level: Coverage of every interval.
        n_boot: Number of bootstrap resamples of the images (rows) for the mean intervals.
        seed: Seed of the PCG64 generator.

    Returns:
        {"labels": {name: {"auc", "lo", "hi", "se", "positives", "negatives", "few_positives"}}, "mean_all":
        {"mean", "lo", "hi", "labels"} over labels with a defined AUC, "mean_eligible": the same over those of
        them with >= min_positives positives, "min_positives", "level", "n_boot", "method"}. A label absent
        from a resample (no positive or no negative drawn) is skipped in that replicate's mean.
    """
    level, n_boot = _check_level(level), _check_n_boot(n_boot)
    y, (s,) = _label_inputs(Y, [S], names)
    labels = {}
    for k, name in enumerate(names):
        r = delong_auc_ci(y[:, k].astype(float), s[:, k], level=level)
        labels[name] = {key: r[key] for key in ("auc", "lo", "hi", "se", "positives", "negatives")}
        labels[name]["few_positives"] = r["positives"] < min_positives
    defined, eligible = _label_sets(labels, "auc", names)
    (reps,) = _boot_label_aucs(y, [s], defined, n_boot, seed) if defined else (np.zeros((n_boot, 0)),)
    means = {}
    for key, cols in (("mean_all", defined), ("mean_eligible", eligible)):
        pick = [defined.index(k) for k in cols]
        mean = float(np.mean([labels[names[k]]["auc"] for k in cols])) if cols else _NAN
        lo, hi = _percentile(_row_nanmean(reps[:, pick]), level) if cols else (_NAN, _NAN)
        means[key] = {"mean": mean, "lo": lo, "hi": hi, "labels": [names[k] for k in cols], "level": level}
    return {"labels": labels, **means, "min_positives": int(min_positives), "level": level, "n_boot": n_boot,
            "method": "delong per label, bootstrap over images for means"}


def paired_multilabel_auc(Y: Any, S_a: Any, S_b: Any, names: Sequence[str], *, min_positives: int = 5,
                          level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Two models' AUCs on the same images: per-label paired DeLong tests and the paired difference of means.

    Args:
        Y: Labels [images, labels], 0 or 1.
        S_a: Scores [images, labels] of model a.
        S_b: Scores [images, labels] of model b, on the same images in the same order.
        names: One name per label column.
        min_positives: Labels with fewer positives are flagged "few_positives" and left out of "mean_eligible".
        level: Coverage of every interval.
        n_boot: Number of paired bootstrap resamples of the images (both models see the same resample).
        seed: Seed of the PCG64 generator.

    Returns:
        {"labels": {name: `delong_paired` result plus "few_positives"}, "mean_all" and "mean_eligible":
        {"diff" (mean AUC of a minus that of b), "lo", "hi" (paired percentile bootstrap), "p" (two-sided
        bootstrap p: twice the smaller share of replicates on either side of 0), "labels", "level", "test":
        "bootstrap"}, "min_positives", "level", "n_boot"}.
    """
    level, n_boot = _check_level(level), _check_n_boot(n_boot)
    y, (sa, sb) = _label_inputs(Y, [S_a, S_b], names)
    labels = {}
    for k, name in enumerate(names):
        labels[name] = delong_paired(y[:, k].astype(float), sa[:, k], sb[:, k], level=level)
        labels[name]["few_positives"] = labels[name]["positives"] < min_positives
    defined, eligible = _label_sets(labels, "diff", names)
    reps_a, reps_b = (_boot_label_aucs(y, [sa, sb], defined, n_boot, seed) if defined
                      else (np.zeros((n_boot, 0)), np.zeros((n_boot, 0))))
    means = {}
    for key, cols in (("mean_all", defined), ("mean_eligible", eligible)):
        pick = [defined.index(k) for k in cols]
        diff = float(np.mean([labels[names[k]]["diff"] for k in cols])) if cols else _NAN
        reps = _row_nanmean(reps_a[:, pick] - reps_b[:, pick]) if cols else np.array([])
        lo, hi = _percentile(reps, level)
        means[key] = {"diff": diff, "lo": lo, "hi": hi, "p": _bootstrap_p(reps), "labels": [names[k] for k in cols],
                      "level": level, "test": "bootstrap"}
    return {"labels": labels, **means, "min_positives": int(min_positives), "level": level, "n_boot": n_boot,
            "method": "paired delong per label, paired bootstrap over images for means"}
