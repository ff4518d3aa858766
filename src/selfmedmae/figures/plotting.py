"""Shared pieces of the figure modules: array coercion, intensity windows, the class palette, PNG saving.

Figures are built on `matplotlib.figure.Figure` and rendered by the Agg canvas, without pyplot, so making a
figure never changes the caller's backend (a notebook keeps its own) and no figure is left open.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from selfmedmae.outputs.atomic import replacing

DPI = 100
MASK_GREY = (0.5, 0.5, 0.5)  # masked MAE patches, as in the MAE paper's figures


def to_numpy(x: Any) -> np.ndarray:
    """torch tensor (any device / dtype, bf16 included) or array-like -> numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if x.dtype.is_floating_point:
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def window(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Display range from percentiles of the finite values (robust to CT air / bright outliers)."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [low, high])
    return (float(lo), float(hi)) if hi > lo else (float(lo), float(lo) + 1.0)


def class_colour(index: int) -> tuple[float, float, float]:
    """Colour of foreground class `index` (0-based), the same in every figure: tab10, then tab20's light tones."""
    if index < 10:
        return tuple(colormaps["tab10"](index)[:3])
    if index < 20:
        return tuple(colormaps["tab20"](2 * (index - 10) + 1)[:3])
    return tuple(colormaps["hsv"]((index * 0.618) % 1.0)[:3])


def save(fig: Figure, path: str | Path) -> Path:
    """Write fig as PNG (parents created; through a temporary file, so a failed write leaves no partial PNG
    and is one line: :mod:`selfmedmae.outputs.atomic`) and return the path."""
    path = Path(path)
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", facecolor="white")
    return path
