"""MAE against scratch: the table (per-class Dice or per-label AUC, mean ± std over seeds) and a verdict
computed from the numbers, for ``make demo`` and ``selfmedmae curve``.

The inputs are the ``metrics.json`` dicts written by ``selfmedmae evaluate`` (one per seed and init).
The verdict rests on a paired comparison on the same test cases (the task's ``paired``: a bootstrap over
cases of the per-case Dice, or over images of the mean AUC), so it says "ahead by X (95 % CI a to b)" or
"no difference detectable". Seeds are paired too: seed k of MAE and seed k of scratch share every setting
but ``init``, so the gap is also given as the mean ± sample std of the per-seed differences.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from selfmedmae.eval.report import flatten
from selfmedmae.metrics.stats import verdict as interval_verdict
from selfmedmae.tasks import task_of_metrics

TIE = 5e-4  # |gap| below this prints as a tie (the tables show 3 decimals)


def headline(metrics: Mapping[str, Any]) -> tuple[str, float]:
    """The one number a run is judged by, as its task says (:meth:`Segmentation.headline`)."""
    name, value = _task(metrics).headline(metrics)
    return name, _num(value)


def n_evaluated(metrics: Mapping[str, Any]) -> int:
    """Test cases (volumes) or images a metrics dict was measured on."""
    return int(metrics.get("n_cases", metrics.get("n_samples", 0)) or 0)


def scored_rows(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The rows a comparison shows: Dice per class and their mean, or AUC per label and their mean."""
    task = _task(metrics)
    return {k: v for k, v in flatten(dict(metrics)).items() if task.compared(k)}


def _task(metrics: Mapping[str, Any]) -> Any:
    task = task_of_metrics(metrics)
    if task is None:
        raise ValueError(f"not a metrics dict of `selfmedmae evaluate` (task {metrics.get('task')!r})")
    return task


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and sample std (ddof=1, NaN for one value) of the finite values, and their count."""
    arr = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan, 0
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan, int(arr.size)


def pm(mean: float, std: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if math.isfinite(std) else "")


@dataclass
class Comparison:
    metric: str  # the headline's name, e.g. "mean Dice"
    mae: list[float]  # headline per seed
    scratch: list[float]
    n_cases: int
    rows: list[tuple[str, tuple[float, float, int], tuple[float, float, int]]]  # name, MAE, scratch
    unit: str = "cases"  # what the test split counts: cases (volumes) or images
    chance: Optional[float] = None  # the metric of a random model (AUC 0.5), stated beside the verdict
    paired: Optional[dict] = None  # MAE minus scratch on the same cases with its interval (the task's paired)

    @property
    def gap(self) -> tuple[float, float, int]:
        """Mean ± std of the per-seed differences MAE - scratch (seeds paired by position)."""
        return mean_std([a - b for a, b in zip(self.mae, self.scratch)])


def compare(mae: Sequence[Mapping[str, Any]], scratch: Sequence[Mapping[str, Any]]) -> Comparison:
    """Pair the seeds' metrics of MAE and scratch (same order, same seeds)."""
    if not mae or len(mae) != len(scratch):
        raise ValueError(f"need the same number of MAE and scratch runs, got {len(mae)} and {len(scratch)}")
    metric = headline(mae[0])[0]
    per_mae, per_scratch = [scored_rows(m) for m in mae], [scored_rows(m) for m in scratch]
    names = list(dict.fromkeys(k for r in per_mae + per_scratch for k in r))
    rows = [(name, mean_std([r.get(name, math.nan) for r in per_mae]),
             mean_std([r.get(name, math.nan) for r in per_scratch])) for name in names]
    task = _task(mae[0])
    return Comparison(metric, [headline(m)[1] for m in mae], [headline(m)[1] for m in scratch],
                      n_evaluated(mae[0]), rows, task.unit, task.chance, _paired(task, mae, scratch))


def _paired(task: Any, mae: Sequence[Mapping[str, Any]], scratch: Sequence[Mapping[str, Any]]) -> Optional[dict]:
    """The task's paired comparison, or None for metrics written without per-case values (older files)."""
    if any(not m.get("cases") and not m.get("images") for m in [*mae, *scratch]):
        return None
    return task.paired(mae, scratch)


def verdict(c: Comparison) -> str:
    """One or two sentences that say what the numbers say, whichever way they fall."""
    (m, _, n), (s, _, _) = mean_std(c.mae), mean_std(c.scratch)
    gap, spread, _ = c.gap
    if not (math.isfinite(m) and math.isfinite(s)):
        return f"No verdict: the {c.metric} is undefined for {'MAE' if not math.isfinite(m) else 'scratch'}."
    where = f"on {c.n_cases} test {c.unit}, {n} seed{'s' if n > 1 else ''}"
    numbers = f"MAE {m:.3f} vs scratch {s:.3f} {where}"
    if c.paired is not None:
        return _interval_text(c, numbers, m, s)
    noisy = n > 1 and math.isfinite(spread) and abs(gap) <= spread
    if abs(gap) < TIE:
        text = f"MAE and scratch tie ({numbers})."
    elif gap > 0 and not noisy:
        text = f"MAE beats scratch by {gap:+.3f} {c.metric} ({numbers})."
    elif gap > 0:
        text = (f"MAE is ahead by {gap:+.3f} {c.metric}, but within the seed-to-seed spread of the difference "
                f"(std {spread:.3f}): no clear gain ({numbers}).")
    else:
        text = f"MAE does not beat scratch here: {gap:+.3f} {c.metric} ({numbers})."
        if noisy:
            text += f" The gap is within the seed-to-seed spread of the difference (std {spread:.3f})."
    if n == 1 and abs(gap) >= TIE:
        text += " One seed only: there is no seed-to-seed spread to judge the gap by."
    return text + _chance(c, m, s)


def _chance(c: Comparison, m: float, s: float) -> str:
    if c.chance is None:
        return ""
    return f" Against chance ({c.chance}): MAE {m - c.chance:+.3f}, scratch {s - c.chance:+.3f}."


def _p_text(p: Any) -> str:
    """'; p = 0.012', '; p < 0.001' (a resampled p is never exactly 0), or '' when there is none."""
    if not isinstance(p, float) or not math.isfinite(p):
        return ""
    return "; p < 0.001" if p < 0.001 else f"; p = {p:.3f}"


def _interval_text(c: Comparison, numbers: str, m: float, s: float) -> str:
    """The verdict from the paired interval: ahead, behind, or no difference detectable."""
    p = c.paired
    said = interval_verdict(p, a="MAE", b="scratch", metric=p["metric"])
    n_seeds = len(c.mae)
    how = (f"paired over the same {p.get('n', c.n_cases)} test {c.unit}"
           + (f", each side's {n_seeds} seeds averaged per case" if n_seeds > 1 else "")
           + _p_text(p.get("p")))
    text = f"{said[0].upper()}{said[1:]} ({how}). Headline: {numbers}."
    gap, spread, n = c.gap
    if n > 1 and math.isfinite(spread):
        text += f" Seed to seed, the gap is {gap:+.3f} ± {spread:.3f} (std)."
    return text + _chance(c, m, s)


def table(c: Comparison) -> str:
    """Markdown: one row per class / label and the mean, MAE and scratch as mean ± std, and the gap."""
    lines = ["| | MAE | scratch | MAE − scratch |", "|---|---|---|---|"]
    for name, (m, ms, _), (s, ss, _) in c.rows:
        gap = f"{m - s:+.3f}" if math.isfinite(m) and math.isfinite(s) else "n/a"
        bold = "**" if name.endswith(" mean") or name.startswith("Dice 8 organs") else ""
        lines.append(f"| {bold}{name}{bold} | {pm(m, ms)} | {pm(s, ss)} | {gap} |")
    return "\n".join(lines) + "\n"


def markdown(c: Comparison, title: str, note: Optional[str] = None) -> str:
    """The report section: title, table, seeds and cases, verdict."""
    n = len(c.mae)
    text = f"## {title}\n\n{table(c)}\nMean ± sample std over {n} seed{'s' if n > 1 else ''} " \
           f"(seeds paired: seed k of each side has the same data, model and budget); {c.n_cases} test " \
           f"{c.unit}.\n"
    if note:
        text += f"\n{note}\n"
    return text + f"\n**Verdict:** {verdict(c)}\n"
