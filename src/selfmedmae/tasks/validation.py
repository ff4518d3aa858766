"""Validation during fine-tuning, on the validation split only (the test split never chooses anything).

It runs what ``evaluate`` runs: the same datasets (:meth:`selfmedmae.data.facade.Data.dataset`), the same
sliding window and classifier pass (:mod:`selfmedmae.inference.forward`), the same per-case scores and means
(:func:`score_volume`, :func:`~selfmedmae.metrics.dice.class_means`), so ``val_dice`` of a checkpoint equals
the mean Dice ``evaluate`` reports for it on the same split and machine. Only HD95 is left out here (it
costs more than the rest of a validation).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from selfmedmae.data.formats import Labels
from selfmedmae.inference.forward import classify_batches, sliding_window_logits
from selfmedmae.metrics.dice import (CaseScores, class_means, mean_over, multilabel_auc, onehot_from_labelmap,
                                     onehot_from_logits, segmentation_scores)
from selfmedmae.errors import UserError
from selfmedmae.runtime.device import Precision
from selfmedmae.runtime.distributed import Dist
from selfmedmae.runtime.log import progress_iter
from selfmedmae.figures.tb_images import slice_of


def score_volume(logits: torch.Tensor, label: torch.Tensor, labels: Labels, spacing: Sequence[float],
                 case_id: str, *, with_hd: bool = True, percentile: float = 95.0,
                 hd_penalty: Optional[float] = None) -> tuple[CaseScores, torch.Tensor]:
    """One case: logits [1, K, *S] and its label ([1, *S] label map or [K, *S] regions) -> (its scores, the
    one-hot prediction [1, K, *S])."""
    pred = onehot_from_logits(logits, labels.multilabel)
    label = label.as_tensor() if hasattr(label, "as_tensor") else torch.as_tensor(label)
    try:
        truth = (label[None] > 0.5).to(torch.uint8) if labels.multilabel else \
            onehot_from_labelmap(label[None], labels.out_channels)
    except ValueError as exc:
        raise UserError(f"{case_id}: label map does not fit the {labels.out_channels} classes ({exc})") from None
    scores = segmentation_scores(pred, truth, spacing, labels.scored, percentile=percentile,
                                 include_background=labels.multilabel, hd_penalty=hd_penalty, case_ids=[case_id],
                                 with_hd=with_hd)
    return scores[0], pred


def spacing_of(image: Any) -> list[float]:
    """The voxel size (mm) of a preprocessed volume: its MetaTensor's, else 1 per axis."""
    dims = image.ndim - 1
    pixdim = getattr(image, "pixdim", None)
    return [float(s) for s in pixdim[:dims]] if pixdim is not None else [1.0] * dims


def _gather_in_order(local: list, ctx: Dist) -> list:
    """Every rank's cases in the dataset's order (rank r held items r, r + world, ...)."""
    if not ctx.enabled:
        return local
    parts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(parts, local)
    out = []
    for i in range(max(len(p) for p in parts)):
        out += [p[i] for p in parts if i < len(p)]
    return out


@torch.no_grad()
def validate_segmentation(model: nn.Module, dataset: Any, labels: Labels, cfg: Any, prec: Precision, ctx: Dist,
                          show: bool = False, snapshot: Optional[dict] = None) -> dict[str, float]:
    """``val_dice`` (mean over classes of the mean over cases) and one ``val_dice_subset`` per reported subset,
    over this rank's share of ``dataset`` gathered from every rank. ``snapshot``: filled with a slice of the
    first volume (image, label, prediction) for TensorBoard."""
    model.eval()
    roi = [int(s) for s in cfg.data.roi_size]
    cases = []
    for i in progress_iter(range(len(dataset)), len(dataset), "validation", "volume", enabled=show):
        item = dataset[i]
        logits = sliding_window_logits(model, item["image"], roi, int(cfg.eval.sw_batch_size),
                                       float(cfg.eval.overlap), ctx.device, prec.autocast, tta=bool(cfg.eval.tta))
        case, pred = score_volume(logits, item["label"], labels, spacing_of(item["image"]), str(item["id"]),
                                  with_hd=False)
        if i == 0 and snapshot is not None:
            label = torch.as_tensor(item["label"])
            shown = label if labels.multilabel else onehot_from_labelmap(label[None], labels.out_channels)[0]
            snapshot.update(slice_of(item["image"], shown, pred[0], labels.multilabel))
        cases.append(case)
    cases = _gather_in_order(cases, ctx)
    per_class = class_means(cases, labels.scored)
    out = {"val_dice": mean_over(per_class, labels.scored)}
    for members in list(labels.subsets.values())[:1]:
        out["val_dice_subset"] = mean_over(per_class, members)
    return out


@torch.no_grad()
def validate_classification(model: nn.Module, loader: Any, labels: Labels, prec: Precision, ctx: Dist,
                            show: bool = False) -> dict[str, float]:
    """``val_auc`` (mean ROC AUC over labels) and ``val_auc/<label>``, over every rank's images."""
    model.eval()
    _, s, t = classify_batches(model, loader, ctx.device, prec.autocast, enabled=show, desc="validation")
    if ctx.enabled:
        gathered: list[Any] = [None] * ctx.world_size
        dist.all_gather_object(gathered, (s, t))
        s, t = torch.cat([g[0] for g in gathered]), torch.cat([g[1] for g in gathered])
    result = multilabel_auc(t.numpy(), s.numpy(), labels.names)
    out = {"val_auc": float(result["mean_auc"])}
    out.update({f"val_auc/{name}": float(v["auc"]) for name, v in result["labels"].items()})
    return out
