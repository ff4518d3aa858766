"""Segmentation metrics: per-class Dice and HD95 (mm) per case, their aggregation, and metric files.

Follows the paper's evaluation (Zhou et al., ISBI 2023: Dice and HD95 for BTCV / BraTS) on binarised one-hot
tensors [B, C, *spatial]: Dice from exact voxel counts (`dice_scores`: MONAI's `compute_dice` where the ground
truth is not empty, in float64), HD95 by MONAI's `compute_hausdorff_distance(percentile=95, spacing=...)`.
Validation during fine-tuning and `evaluate` both score through `segmentation_scores` and average through
`class_means` / `mean_over`, so they report the same Dice for the same predictions. Two kinds of task:

- label maps (BTCV, MSD hippocampus): softmax/argmax then one-hot, channel 0 = background, not scored
  (`onehot_from_logits(..., multilabel=False)`, `include_background=False`);
- regions (BraTS TC / WT / ET): sigmoid then threshold 0.5, channels overlap, all scored
  (`onehot_from_logits(..., multilabel=True)`, `include_background=True`).

Empty masks. MONAI returns NaN Dice for an empty ground truth (so the official SelfMedMAE code never penalises
a false positive on an absent organ) and NaN / inf distances. We follow the BraTS challenge instead, for every
(case, class) pair:

    ground truth   prediction   Dice   HD95
    empty          empty        1      0          the case is perfect for this class
    empty          non-empty    0      penalty    a false positive on an absent class is an error
    non-empty      empty        0      penalty    a missed structure
    non-empty      non-empty    MONAI  MONAI

The penalty is `hd_penalty` in mm; by default the diagonal of the evaluated image, sqrt(sum((n_i * s_i)^2)),
which for a BraTS volume (240 x 240 x 155 at 1 mm) is the 373.13 mm the BraTS ranking uses
(`BRATS_HD_PENALTY_MM`). Pass `hd_penalty=float("nan")` to leave such pairs out of the HD means instead.
With this convention no Dice is ever NaN, so the mean over classes of per-class means equals the official
code's mean over volumes of per-volume class means.

HD95 is MONAI's: edge voxels by binary erosion, exact Euclidean distances scaled by the voxel spacing, the
95th percentile (linear interpolation) of each directed set of distances, and the larger of the two.
Classification metrics (ROC AUC) live in `auc.py` and are re-exported here.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

from selfmedmae.data.brats import BRATS_HD_PENALTY_MM
from selfmedmae.inference.decide import decide, probabilities
from selfmedmae.metrics.table import metrics_markdown
from selfmedmae.outputs.atomic import write_text

__all__ = ["BRATS_HD_PENALTY_MM", "CaseScores", "dice_scores", "class_means", "mean_over", "onehot_from_logits", "onehot_from_labelmap",
           "segmentation_scores", "summarize_segmentation", "write_metrics", "metrics_markdown"]


Spacing = Sequence[float] | Sequence[Sequence[float]]


@dataclass
class CaseScores:
    """Scores of one case, keyed by class name. `hd95` is at the percentile the scores were computed with."""

    dice: dict[str, float]
    hd95: dict[str, float]
    gt_empty: dict[str, bool]
    pred_empty: dict[str, bool]
    case_id: str | None = None
    spacing: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def onehot_from_logits(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Binarise network outputs [B, C, *spatial] by the one rule of :mod:`selfmedmae.inference.decide`: argmax of the
    softmax + one-hot (label maps) or sigmoid > 0.5 (regions)."""
    decided = decide(probabilities(logits, multilabel), multilabel)
    return decided.to(torch.uint8) if multilabel else onehot_from_labelmap(decided, logits.shape[1])


def onehot_from_labelmap(label: torch.Tensor | np.ndarray, num_classes: int) -> torch.Tensor:
    """Integer label map [B, *spatial] or [B, 1, *spatial] -> one-hot uint8 [B, num_classes, *spatial]."""
    label = torch.as_tensor(np.asarray(label) if isinstance(label, np.ndarray) else label).long()
    if label.ndim >= 3 and label.shape[1] == 1:
        label = label[:, 0]
    if label.numel() and (label.min() < 0 or label.max() >= num_classes):
        raise ValueError(f"label values must lie in [0, {num_classes - 1}], got {int(label.min())}..{int(label.max())}")
    onehot = torch.nn.functional.one_hot(label, num_classes)  # [B, *spatial, C]
    return onehot.movedim(-1, 1).to(torch.uint8).contiguous()


def dice_scores(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Dice of binary [B, C, *S] masks -> float64 [B, C]: 2 |P & G| / (|P| + |G|) from exact voxel counts;
    1 where both masks are empty, 0 where only one is (the convention above)."""
    p, g = pred.flatten(2).bool(), label.flatten(2).bool()
    inter = (p & g).sum(-1, dtype=torch.int64).double()
    total = (p.sum(-1, dtype=torch.int64) + g.sum(-1, dtype=torch.int64)).double()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


def class_means(cases: Sequence["CaseScores"], names: Sequence[str], metric: str = "dice") -> dict[str, float]:
    """Mean over cases of each class's score (NaN left out): what every reported Dice averages."""
    return {name: _stats([getattr(c, metric)[name] for c in cases])[0] for name in names}


def _case_spacings(spacing: Spacing, batch: int, dims: int) -> list[list[float]]:
    """One spacing per case: a single [dims] spacing is shared, a [B][dims] list gives one per case."""
    arr = np.asarray(spacing, dtype=np.float64)
    if arr.ndim == 1:
        arr = np.broadcast_to(arr, (batch, arr.shape[0]))
    if arr.shape != (batch, dims):
        raise ValueError(f"spacing must be [{dims}] or [{batch}, {dims}], got shape {list(np.asarray(spacing).shape)}")
    return arr.tolist()


def segmentation_scores(
    pred_onehot: torch.Tensor | np.ndarray,
    label_onehot: torch.Tensor | np.ndarray,
    spacing: Spacing,
    class_names: Sequence[str],
    percentile: float = 95.0,
    include_background: bool = False,
    hd_penalty: float | None = None,
    case_ids: Sequence[str] | None = None,
    with_hd: bool = True,
) -> list[CaseScores]:
    """Per-case, per-class Dice and HD (mm) of binary one-hot predictions against one-hot labels.

    `class_names` names the scored channels: C - 1 names without background, C names with it. `spacing` is
    the voxel size in mm along the spatial axes, shared or one per case. See the module docstring for empty
    masks. `with_hd=False` (validation during training) leaves HD out (NaN): it costs more than the Dice.
    """
    pred = torch.as_tensor(np.asarray(pred_onehot) if isinstance(pred_onehot, np.ndarray) else pred_onehot)
    label = torch.as_tensor(np.asarray(label_onehot) if isinstance(label_onehot, np.ndarray) else label_onehot)
    if pred.shape != label.shape or pred.ndim < 4:
        raise ValueError(f"pred and label must both be [B, C, *spatial] (2D or 3D), "
                         f"got {list(pred.shape)} and {list(label.shape)}")
    pred, label = pred.detach().cpu().float() > 0.5, label.detach().cpu().float() > 0.5  # binarise
    if not include_background:
        pred, label = pred[:, 1:], label[:, 1:]
    batch, n_cls, spatial = pred.shape[0], pred.shape[1], pred.shape[2:]
    if len(class_names) != n_cls:
        raise ValueError(f"{len(class_names)} class names for {n_cls} scored channels "
                         f"(include_background={include_background})")
    if case_ids is not None and len(case_ids) != batch:
        raise ValueError(f"{len(case_ids)} case ids for a batch of {batch}")
    spacings = _case_spacings(spacing, batch, len(spatial))

    dice = dice_scores(pred, label)  # [B, C], the empty-mask convention included
    if with_hd:
        with warnings.catch_warnings():  # MONAI warns on every empty mask; those cases are handled below
            warnings.simplefilter("ignore")
            hd = compute_hausdorff_distance(pred.float(), label.float(), include_background=True,
                                            percentile=percentile, spacing=spacings)  # [B, C] in mm
    else:
        hd = torch.full(dice.shape, float("nan"))
    gt_has = label.flatten(2).any(-1)  # [B, C]
    pred_has = pred.flatten(2).any(-1)

    cases = []
    for b in range(batch):
        diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(spatial, spacings[b])))  # image extent in mm
        penalty = hd_penalty if hd_penalty is not None else diagonal
        scores: dict[str, dict[str, Any]] = {"dice": {}, "hd95": {}, "gt_empty": {}, "pred_empty": {}}
        for c, name in enumerate(class_names):
            g, p = bool(gt_has[b, c]), bool(pred_has[b, c])
            d = float(dice[b, c])
            if not with_hd:
                h = float("nan")
            elif g and p:
                h = float(hd[b, c])
            elif not g and not p:
                h = 0.0
            else:
                h = float(penalty)
            scores["dice"][name], scores["hd95"][name] = d, h
            scores["gt_empty"][name], scores["pred_empty"][name] = not g, not p
        cases.append(CaseScores(**scores, case_id=None if case_ids is None else str(case_ids[b]), spacing=spacings[b]))
    return cases


def _stats(values: list[float]) -> tuple[float, float, int]:
    """Mean, population std and count of the finite values (NaN = excluded by the caller's choice)."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan"), 0
    return float(arr.mean()), float(arr.std()), int(arr.size)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def mean_over(per_class: Mapping[str, Any], members: Sequence[str], key: str | None = None) -> float:
    """The mean over classes ``members`` (NaN left out); ``key`` picks a field of dict values."""
    return _nanmean([per_class[m][key] if key else per_class[m] for m in members])


def summarize_segmentation(
    cases: Sequence[CaseScores],
    class_names: Sequence[str] | None = None,
    subsets: Mapping[str, Sequence[int | str]] | None = None,
    hd_percentile: float = 95.0,
) -> dict[str, Any]:
    """Mean over cases per class, the mean over classes, subset means (e.g. BTCV's 8 organs), and the cases.

    Returns {"task": "segmentation", "n_cases", "hd_percentile", "classes": {name: {"dice", "dice_std", "hd95",
    "hd95_std", "n", "n_hd", "n_gt_empty", "n_pred_empty"}}, "mean": {"dice", "hd95", "classes"},
    "subsets": {subset: {"dice", "hd95", "classes"}}, "cases": [CaseScores.to_dict()]}. Subset members are
    class names or 0-based indices into `class_names`.
    """
    if not cases:
        raise ValueError("no cases to summarise")
    names = list(class_names) if class_names is not None else list(cases[0].dice)
    classes: dict[str, dict[str, float | int]] = {}
    for name in names:
        d_mean, d_std, n = _stats([c.dice[name] for c in cases])  # d_mean: class_means()
        h_mean, h_std, n_hd = _stats([c.hd95[name] for c in cases])
        classes[name] = {"dice": d_mean, "dice_std": d_std, "hd95": h_mean, "hd95_std": h_std, "n": n, "n_hd": n_hd,
                         "n_gt_empty": sum(c.gt_empty[name] for c in cases),
                         "n_pred_empty": sum(c.pred_empty[name] for c in cases)}

    def group(members: Sequence[str]) -> dict[str, Any]:
        return {"dice": mean_over(classes, members, "dice"), "hd95": mean_over(classes, members, "hd95"),
                "classes": list(members)}

    out_subsets = {}
    for subset, members in (subsets or {}).items():
        resolved = []
        for m in members:
            if isinstance(m, (int, np.integer)) and not isinstance(m, bool):
                if not 0 <= m < len(names):
                    raise ValueError(f"subset {subset!r}: class index {m} outside 0..{len(names) - 1}")
                resolved.append(names[m])
            elif m in classes:
                resolved.append(str(m))
            else:
                raise ValueError(f"subset {subset!r}: unknown class {m!r} (classes: {', '.join(names)})")
        out_subsets[subset] = group(resolved)
    return {"task": "segmentation", "n_cases": len(cases), "hd_percentile": hd_percentile, "classes": classes,
            "mean": group(names), "subsets": out_subsets, "cases": [c.to_dict() for c in cases]}


def _json_safe(obj: Any) -> Any:
    """NaN / inf -> None (strict JSON has no NaN), numpy and torch scalars -> Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.generic, torch.Tensor)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_metrics(metrics: Mapping[str, Any], out_dir: str | Path, rows: Sequence[str] = ()) -> str:
    """Write `metrics.json` (strict JSON, NaN as null) and `metrics.md` (the context lines and the table
    ``rows``) into out_dir; return the markdown text."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "metrics.json", json.dumps(_json_safe(metrics), indent=2) + "\n")
    text = metrics_markdown(metrics, rows)
    write_text(out / "metrics.md", text)
    return text
