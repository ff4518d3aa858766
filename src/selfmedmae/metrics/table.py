"""Tables of results: the markdown pieces the tasks build their tables from (:func:`table`, :func:`num`,
:func:`pm`), the page `evaluate` prints (:func:`metrics_markdown`), and the per-image scores CSV of
classifiers (:func:`write_scores_csv`).

The same markdown is printed by `evaluate` and saved as `metrics.md`. Top-level scalar entries other than the
metrics themselves (checkpoint, split, ...) are listed above the table. NaN prints as "n/a".
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from selfmedmae.outputs.atomic import replacing

_SKIP = {"task", "classes", "mean", "subsets", "cases", "labels", "mean_auc", "n_labels_excluded", "excluded_labels"}


def num(x: Any, digits: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def pm(mean: Any, std: Any, digits: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{num(mean, digits)} ± {num(std, digits)}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"  # numbers right-aligned
    lines = ["| " + " | ".join(header) + " |", rule]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def metrics_markdown(metrics: Mapping[str, Any], rows: Sequence[str] = ()) -> str:
    """The scalar context lines of a metric dict, then its table ``rows`` (the task's, e.g.
    :meth:`selfmedmae.tasks.segmentation.Segmentation.rows`)."""
    lines = [f"- {k}: {v}" for k, v in metrics.items() if k not in _SKIP and isinstance(v, (str, int, float, bool))]
    if lines and rows:
        lines.append("")
    lines += list(rows)
    if not lines:
        raise ValueError("metrics has neither table rows nor scalar entries to list")
    return "\n".join(lines) + "\n"


def write_scores_csv(path: Path, ids: Sequence[str], scores: np.ndarray, names: Sequence[str],
                     targets: Optional[np.ndarray] = None) -> Path:
    """One row per image: its id, one probability column per label (and the 0/1 targets when given)."""
    path = Path(path)
    with replacing(path) as tmp, open(tmp, "w", newline="") as fh:  # no partial CSV on a failed write
        writer = csv.writer(fh)
        writer.writerow(["image", *names, *([f"{n} (target)" for n in names] if targets is not None else [])])
        for i, image_id in enumerate(ids):
            row = [image_id, *(f"{float(s):.9g}" for s in scores[i])]  # 9 digits: float32 exactly
            writer.writerow(row + ([int(t) for t in targets[i]] if targets is not None else []))
    return path
