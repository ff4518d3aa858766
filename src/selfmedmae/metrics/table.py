"""Tables of results: markdown for the metric dicts of `metrics.summarize_segmentation` and
`auc.multilabel_auc`, and the per-image scores CSV of classifiers (`write_scores_csv`).

The same markdown is printed by `evaluate` and saved as `metrics.md`. Top-level scalar entries other than the
metrics themselves (checkpoint, split, ...) are listed above the table. NaN prints as "n/a".
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

_SKIP = {"task", "classes", "mean", "subsets", "cases", "labels", "mean_auc", "n_labels_excluded", "excluded_labels"}


def _num(x: Any, digits: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _pm(mean: Any, std: Any, digits: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{_num(mean, digits)} ± {_num(std, digits)}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"  # numbers right-aligned
    lines = ["| " + " | ".join(header) + " |", rule]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _segmentation(m: Mapping[str, Any]) -> list[str]:
    p = m.get("hd_percentile", 95)
    hd = f"HD{p:g}"
    rows = [[name, _pm(c["dice"], c["dice_std"], 4), _pm(c["hd95"], c["hd95_std"], 2), str(c["n"]),
             str(c["n_gt_empty"])] for name, c in m["classes"].items()]
    for name, s in [("mean", m["mean"]), *m.get("subsets", {}).items()]:
        n = len(s["classes"])
        rows.append([f"**{name} ({n} class{'es' if n != 1 else ''})**", f"**{_num(s['dice'], 4)}**",
                     f"**{_num(s['hd95'], 2)}**", "", ""])
    lines = _table(["Class", "Dice (mean ± std)", f"{hd} mm (mean ± std)", "cases", "GT empty"], rows)
    return lines + ["", "Empty masks: both empty -> Dice 1, HD 0; one empty -> Dice 0, HD = penalty "
                        "(BraTS convention)."]


def _classification(m: Mapping[str, Any]) -> list[str]:
    rows = [[name, _num(v["auc"], 4), str(v["n_pos"]), str(v["n_neg"])] for name, v in m["labels"].items()]
    n_used = len(m["labels"]) - m["n_labels_excluded"]
    rows.append([f"**mean ({n_used} of {len(m['labels'])} labels)**", f"**{_num(m['mean_auc'], 4)}**", "", ""])
    lines = _table(["Label", "AUC", "positives", "negatives"], rows)
    if m["n_labels_excluded"]:
        lines += ["", f"{m['n_labels_excluded']} label(s) excluded from the mean (targets all one value, "
                      f"AUC undefined): " + ", ".join(m["excluded_labels"])]
    return lines


def metrics_markdown(metrics: Mapping[str, Any]) -> str:
    """A markdown table of a segmentation or classification metric dict (plus its scalar context lines)."""
    lines = [f"- {k}: {v}" for k, v in metrics.items() if k not in _SKIP and isinstance(v, (str, int, float, bool))]
    if lines:
        lines.append("")
    task = metrics.get("task")
    if task == "segmentation":
        lines += _segmentation(metrics)
    elif task == "classification":
        lines += _classification(metrics)
    elif not lines:
        raise ValueError("metrics has neither task 'segmentation' / 'classification' nor scalar entries to list")
    return "\n".join(lines) + "\n"


def write_scores_csv(path: Path, ids: Sequence[str], scores: np.ndarray, names: Sequence[str],
                     targets: Optional[np.ndarray] = None) -> Path:
    """One row per image: its id, one probability column per label (and the 0/1 targets when given)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", *names, *([f"{n} (target)" for n in names] if targets is not None else [])])
        for i, image_id in enumerate(ids):
            row = [image_id, *(f"{float(s):.9g}" for s in scores[i])]  # 9 digits: float32 exactly
            writer.writerow(row + ([int(t) for t in targets[i]] if targets is not None else []))
    return path
