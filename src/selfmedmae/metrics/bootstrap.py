"""Resampling of per-case metrics: percentile bootstrap intervals over cases (Efron & Tibshirani 1993) and
the paired comparison of two models on the same cases (bootstrap interval of the difference, sign-flip
permutation p). The shared draws live here too: ``numpy.random.Generator(PCG64(seed))``, blocks of weights
that bound memory. Public names are re-exported by :mod:`selfmedmae.metrics.stats`."""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Iterator, Sequence

import numpy as np

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
