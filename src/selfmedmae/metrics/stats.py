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
from typing import Any

from selfmedmae.metrics.delong import (delong_auc_ci, delong_paired, multilabel_auc_ci,  # noqa: F401 (re-exported)
                                       paired_multilabel_auc)
from selfmedmae.metrics.bootstrap import bootstrap_ci, bootstrap_mean_ci, paired_bootstrap_diff  # noqa: F401

__all__ = ["bootstrap_ci", "bootstrap_mean_ci", "paired_bootstrap_diff", "delong_auc_ci", "delong_paired",
           "multilabel_auc_ci", "paired_multilabel_auc", "verdict", "format_ci"]

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
