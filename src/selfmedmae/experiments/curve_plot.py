"""The label-efficiency figure of ``selfmedmae curve``: the test metric against the labelled fraction,
MAE vs scratch, mean ± sample std over seeds as error bars (none for one seed)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from selfmedmae.figures.plotting import save

STYLE = {"mae": dict(color="tab:blue", marker="o", label="MAE pre-trained"),
         "scratch": dict(color="tab:grey", marker="s", label="from scratch")}


def plot_curve(rows: Sequence[dict], metric: str, n_test: int, path: str | Path, unit: str = "cases",
               chance: Optional[float] = None) -> Path:
    """``rows`` from :func:`selfmedmae.experiments.curve.summarize`. The x axis is logarithmic (fractions such as
    0.1 / 0.25 / 0.5 / 1 are evenly spread); each tick also names the number of labelled ``unit``; ``chance``
    (the metric of a random model) is drawn as a line."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    fractions = sorted({r["fraction"] for r in rows})
    for k, init in enumerate(STYLE):
        own = sorted((r for r in rows if r["init"] == init), key=lambda r: r["fraction"])
        if not own:
            continue
        x = np.array([r["fraction"] for r in own]) * (1.0 + 0.015 * (2 * k - 1))  # bars side by side
        y = np.array([r["mean"] for r in own])
        err = np.array([r["std"] if math.isfinite(r["std"]) else 0.0 for r in own])
        n_seeds = max(r["n_seeds"] for r in own)
        ax.errorbar(x, y, yerr=err, capsize=4, linewidth=1.6, markersize=6,
                    **{**STYLE[init], "label": f"{STYLE[init]['label']} ({n_seeds} seed{'s' if n_seeds > 1 else ''})"})
    if chance is not None:
        ax.axhline(chance, color="tab:red", linestyle="--", linewidth=1, label=f"chance ({chance:g})")
    ax.set_xscale("log")
    n_by_fraction = {}
    for r in rows:
        n_by_fraction.setdefault(r["fraction"], r["n_labelled"])
    ax.set_xticks(fractions)
    ax.set_xticklabels([f"{f:g}\n(n={'/'.join(map(str, n_by_fraction[f]))})" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel(f"fraction of the labelled training {unit} (n = {unit} fine-tuned on)")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"Label efficiency: test {metric} ({n_test} {unit}), mean ± std over seeds", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.set_xlim(min(fractions) / 1.3, max(fractions) * 1.3)
    ax.legend(loc="best")
    fig.tight_layout()
    return save(fig, path)
