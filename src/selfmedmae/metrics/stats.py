"""Uncertainty of test-set metrics: confidence intervals and paired comparisons of two models.

What it holds and which methods it follows:

- Per-case metrics (Dice, HD95, any number per case): percentile bootstrap over cases (Efron & Tibshirani 1993).
  `bootstrap_ci` for a 1-D list of per-case values, `bootstrap_mean_ci` for the headline "mean over classes of
  the per-class mean" of a [cases, classes] table, `paired_bootstrap_diff` for two models scored on the same
  cases (bootstrap interval of the difference, p from a paired sign-flip permutation test).
- ROC AUC: DeLong, DeLong & Clarke-Pearson (1988) variance of the Mann-Whitney AUC, computed with the fast midrank
  algorithm of Sun & Xu (2014). `delong_auc_ci` gives one AUC with a logit-transformed interval, `delong_paired`
  the paired test of two correlated AUCs on the same images (Wald interval of the difference).
- Multi-label AUC (ChestX-ray14): per-label DeLong plus a bootstrap over images for the mean over labels
  (`multilabel_auc_ci`, `paired_multilabel_auc`). Labels with fewer than `min_positives` positives are flagged
  and left out of the "eligible" mean, because their AUC is too noisy to carry a headline number.
- `verdict` and `format_ci` turn the numbers into text.

NaN marks a case where a metric is undefined; such cases are dropped and the number dropped is reported.
All random draws come from ``numpy.random.Generator(PCG64(seed))``, so a result is fixed by its seed.
Only numpy and the standard library are needed.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Iterator, Sequence

import numpy as np

from selfmedmae.metrics.auc import average_ranks

_NAN = float("nan")
_BLOCK = 4_000_000  # numbers per block of bootstrap weights, to bound memory for large test sets


# ----------------------------------------------------------------------------------------------- shared helpers

def _check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    return level


def _check_n_boot(n_boot: int) -> int:
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    return int(n_boot)


def _z(level: float) -> float:
    """Two-sided standard normal quantile for a central interval of probability `level`."""
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def _two_sided_p(z: float) -> float:
    """Two-sided normal p-value of a z statistic."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def _weight_blocks(rng: np.random.Generator, n: int, n_boot: int) -> Iterator[np.ndarray]:
    """Bootstrap resamples of n cases as count weights, in blocks of rows [b, n] that total n_boot rows.

    Row r, column i holds how many times case i was drawn in replicate r (each row sums to n).
    """
    per = max(1, _BLOCK // max(n, 1))
    for start in range(0, n_boot, per):
        b = min(per, n_boot - start)
        idx = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
        yield np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def _percentile(reps: np.ndarray, level: float) -> tuple[float, float]:
    """Central percentile interval of the finite bootstrap replicates."""
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return _NAN, _NAN
    alpha = 1.0 - level
    lo, hi = np.quantile(reps, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def _bootstrap_p(reps: np.ndarray) -> float:
    """Two-sided bootstrap p for "the statistic is 0": twice the smaller tail of replicates at or across 0.

    It is the p-value that the percentile interval inverts (0 falls outside the `level` interval roughly when
    p < 1 - level), with the add-one correction so that p is never 0.
    """
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return _NAN
    tail = min(int((reps <= 0).sum()), int((reps >= 0).sum()))
    return float(min(1.0, 2.0 * (tail + 1) / (reps.size + 1)))


def _row_nanmean(a: np.ndarray) -> np.ndarray:
    """Mean of each row over its finite entries; NaN for a row with none."""
    ok = np.isfinite(a)
    count = ok.sum(axis=1)
    total = np.where(ok, a, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), _NAN)


# ------------------------------------------------------------------------------------- per-case bootstrap

def _case_table(values: Any, name: str) -> tuple[np.ndarray, int]:
    """Values as a [cases, classes] float table without the cases that hold no finite value, and how many went.

    1-D input becomes one column. Infinite values are refused (NaN is the marker of an undefined metric).
    """
    m = np.asarray(values, dtype=np.float64)
    if m.ndim == 1:
        m = m[:, None]
    if m.ndim != 2:
        raise ValueError(f"{name} must be 1-D [cases] or 2-D [cases, classes], got shape {list(m.shape)}")
    if np.isinf(m).any():
        raise ValueError(f"{name} contains inf; mark an undefined value with NaN")
    keep = np.isfinite(m).any(axis=1)
    return m[keep], int((~keep).sum())


def _class_mean_stat(weights: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Mean over classes of the weighted per-class mean, per row of case weights [b, n] -> [b].

    A class with no finite value under a row's weights is skipped in that row.
    """
    ok = np.isfinite(table)
    sums = weights @ np.where(ok, table, 0.0)
    counts = weights @ ok.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, sums / np.maximum(counts, 1e-300), _NAN)
    return _row_nanmean(per_class)


def _bootstrap_table(table: np.ndarray, dropped: int, n_boot: int, level: float, seed: int) -> dict[str, Any]:
    """Percentile bootstrap over the rows of a [cases, classes] table of the mean-of-class-means statistic."""
    level, n_boot = _check_level(level), _check_n_boot(n_boot)
    n = table.shape[0]
    out = {"mean": _NAN, "lo": _NAN, "hi": _NAN, "n": n, "n_dropped": dropped, "level": level,
           "method": "bootstrap", "n_boot": n_boot}
    if n == 0:
        return out
    mean = float(_class_mean_stat(np.ones((1, n)), table)[0])
    if n == 1:
        return {**out, "mean": mean, "lo": mean, "hi": mean}
    reps = np.concatenate([_class_mean_stat(w, table) for w in _weight_blocks(_rng(seed), n, n_boot)])
    lo, hi = _percentile(reps, level)
    return {**out, "mean": mean, "lo": lo, "hi": hi}


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> dict[str, Any]:
    """Percentile bootstrap confidence interval of the mean of per-case values.

    Args:
        values: 1-D per-case numbers; NaN marks a case where the metric is undefined and is dropped.
        n_boot: Number of bootstrap resamples of the cases.
        level: Coverage of the central interval, e.g. 0.95.
        seed: Seed of the PCG64 generator; the same seed gives the same interval.

    Returns:
        {"mean", "lo", "hi", "n" (cases used), "n_dropped" (NaN cases), "level", "method": "bootstrap",
        "n_boot"}. With no case left every number is NaN; with one case lo = hi = mean.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {list(v.shape)}")
    table, dropped = _case_table(v, "values")
    return _bootstrap_table(table, dropped, n_boot, level, seed)


def bootstrap_mean_ci(matrix: Any, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Percentile bootstrap interval of the mean over classes of the per-class mean (the "mean Dice" headline).

    Args:
        matrix: [cases, classes] per-case per-class values; NaN entries are skipped in their class mean, and a
            case with no finite value is dropped.
        n_boot: Number of bootstrap resamples of the cases (whole rows are resampled).
        level: Coverage of the central interval.
        seed: Seed of the PCG64 generator.

    Returns:
        The keys of `bootstrap_ci`; "mean" is the mean over classes of each class's nanmean over cases.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"matrix must be 2-D [cases, classes], got shape {list(m.shape)}")
    table, dropped = _case_table(m, "matrix")
    return _bootstrap_table(table, dropped, n_boot, level, seed)


# ----------------------------------------------------------------------------------------- paired per-case

def _paired_table(a: Any, b: Any) -> tuple[np.ndarray, int]:
    """Differences a - b as a [cases, classes] table, NaN wherever either is NaN, empty cases dropped."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim not in (1, 2):
        raise ValueError(f"a and b must have one 1-D or 2-D shape, got {list(a.shape)} and {list(b.shape)}")
    if np.isinf(a).any() or np.isinf(b).any():
        raise ValueError("a or b contains inf; mark an undefined value with NaN")
    return _case_table(a - b, "a - b")  # NaN in either side gives NaN in the difference


def _sign_flip_p(table: np.ndarray, n_perm: int, rng: np.random.Generator) -> float:
    """Two-sided p of the paired sign-flip permutation test of the mean-of-class-means of the differences.

    Under "no difference" each case's pair (a, b) is exchangeable, so its row of differences may flip sign.
    Flipping does not change which entries are defined, so the statistic is linear in the signs. All 2**n sign
    patterns are enumerated (exact p) when that is at most n_perm; otherwise n_perm random patterns are drawn
    and p = (hits + 1) / (n_perm + 1).
    """
    n = table.shape[0]
    ok = np.isfinite(table)
    counts = ok.sum(axis=0)
    defined = counts > 0
    unit = np.where(ok, table, 0.0)[:, defined] / counts[defined]  # [n, classes]: contribution per case
    observed = abs(float(unit.sum(axis=0).mean()))
    tol = 1e-12 * max(1.0, observed)
    if n < 31 and 2 ** n <= n_perm:
        codes = np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]
        flipped = np.abs((((codes & 1) * 2 - 1) @ unit).mean(axis=1))
        return float((flipped >= observed - tol).mean())
    hits, per = 0, max(1, _BLOCK // n)
    for start in range(0, n_perm, per):
        signs = rng.integers(0, 2, size=(min(per, n_perm - start), n)) * 2 - 1
        hits += int((np.abs((signs @ unit).mean(axis=1)) >= observed - tol).sum())
    return (hits + 1) / (n_perm + 1)


def paired_bootstrap_diff(a: Any, b: Any, *, n_boot: int = 2000, level: float = 0.95,
                          seed: int = 0) -> dict[str, Any]:
    """Difference between two models scored on the same cases, with a paired bootstrap interval and a p-value.

    Args:
        a: Per-case values of model a, 1-D [cases] or 2-D [cases, classes].
        b: The same for model b, on the same cases in the same order. An entry NaN on either side is dropped on
            both; a case left with no entry is dropped.
        n_boot: Number of bootstrap resamples of the cases, and of random sign flips for the test.
        level: Coverage of the central interval.
        seed: Seed of the PCG64 generator.

    Returns:
        {"diff" (a minus b: for 2-D the mean over classes of the per-class mean difference), "lo", "hi" (paired
        percentile bootstrap over cases), "p" (two-sided), "test": "sign-flip permutation" (random flips of the
        sign of each case's differences; exact enumeration when 2**n <= n_boot), "n", "n_dropped", "level",
        "method": "paired bootstrap", "n_boot"}. With no case left the numbers are NaN.
    """
    table, dropped = _paired_table(a, b)
    res = _bootstrap_table(table, dropped, n_boot, level, seed)
    diff = res.pop("mean")
    p = _NAN
    if res["n"] > 0:
        p = _sign_flip_p(table, res["n_boot"], _rng(np.random.SeedSequence(seed).spawn(1)[0]))
    return {"diff": diff, "lo": res["lo"], "hi": res["hi"], "p": float(p), "test": "sign-flip permutation",
            "n": res["n"], "n_dropped": dropped, "level": res["level"], "method": "paired bootstrap",
            "n_boot": res["n_boot"]}


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


# ------------------------------------------------------------------------------------------------------ text

def _fmt(x: float, digits: int) -> str:
    return f"{round(float(x), digits) + 0.0:.{digits}f}"  # + 0.0 turns -0.0 into 0.0


def format_ci(mean: float, lo: float, hi: float, digits: int = 3) -> str:
    """A value with its interval, like "0.812 (0.790 to 0.833)"; "n/a" for a NaN value, "(CI n/a)" for a NaN CI."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{_fmt(mean, digits)} (CI n/a)"
    return f"{_fmt(mean, digits)} ({_fmt(lo, digits)} to {_fmt(hi, digits)})"


def verdict(diff: dict[str, Any], *, a: str, b: str, metric: str, digits: int = 3) -> str:
    """One sentence that states what a difference of a minus b and its interval support.

    Args:
        diff: A result holding "diff" (a minus b), "lo", "hi" and "level", as `paired_bootstrap_diff`,
            `delong_paired` or the "mean_eligible" entry of `paired_multilabel_auc` return.
        a: Name of model a.
        b: Name of model b.
        metric: Name of the metric, e.g. "mean Dice" or "AUC".
        digits: Decimals printed.

    Returns:
        "<a> ahead of <b> by X <metric> (95 % CI lo to hi)" when the interval lies above 0, "<a> behind <b> by X
        ..." when it lies below 0 (X and the interval then give the size of the gap, b minus a), and otherwise
        "no difference detectable between <a> and <b> with this test set: <a> minus <b> = X <metric> (95 % CI
        lo to hi)".
    """
    d, lo, hi = float(diff["diff"]), float(diff["lo"]), float(diff["hi"])
    pct = f"{float(diff['level']) * 100:g} % CI"
    if not math.isfinite(d):
        return f"no {metric} difference between {a} and {b} could be computed (no usable cases)"
    if math.isfinite(lo) and lo > 0:
        return f"{a} ahead of {b} by {_fmt(d, digits)} {metric} ({pct} {_fmt(lo, digits)} to {_fmt(hi, digits)})"
    if math.isfinite(hi) and hi < 0:
        return f"{a} behind {b} by {_fmt(-d, digits)} {metric} ({pct} {_fmt(-hi, digits)} to {_fmt(-lo, digits)})"
    ci = f"{_fmt(lo, digits)} to {_fmt(hi, digits)}" if math.isfinite(lo) and math.isfinite(hi) else "n/a"
    return (f"no difference detectable between {a} and {b} with this test set: {a} minus {b} = "
            f"{_fmt(d, digits)} {metric} ({pct} {ci})")
