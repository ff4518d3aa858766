"""Validation during fine-tuning: mean Dice (sliding window, whole volumes) or mean AUC, on the
validation split only; the test split is never used to choose anything."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
from monai.inferers import sliding_window_inference
from torch import nn

from selfmedmae.eval.metrics import multilabel_auc, onehot_from_labelmap, onehot_from_logits
from selfmedmae.train.distributed import Dist
from selfmedmae.train.log import progress_iter
from selfmedmae.train.engine import Precision
from selfmedmae.train.tb_images import slice_of


def dice_per_class(pred: torch.Tensor, label: torch.Tensor) -> np.ndarray:
    """[C, *S] binary maps -> [C] Dice; 1 where both are empty (the MSD/BraTS convention)."""
    p, g = pred.flatten(1).float(), label.flatten(1).float()
    inter, total = (p * g).sum(1), p.sum(1) + g.sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total)).numpy()


@torch.no_grad()
def validate_segmentation(model: nn.Module, dataset: Any, roi: list[int], multilabel: bool, cfg: Any,
                          prec: Precision, ctx: Dist, subset: Optional[list[int]] = None, show: bool = False,
                          snapshot: Optional[dict] = None) -> dict[str, float]:
    """Mean Dice over this rank's share of ``dataset``. ``show``: progress per volume; ``snapshot``: a dict
    filled with a slice of the first volume (image, label, prediction) for TensorBoard."""
    model.eval()
    rows = []
    for i in progress_iter(range(len(dataset)), len(dataset), "validation", "volume", enabled=show):
        item = dataset[i]
        image = torch.as_tensor(item["image"]).unsqueeze(0).to(ctx.device)  # [1, C, *S]
        with prec.autocast():
            logits = sliding_window_inference(image, roi, cfg.eval.sw_batch_size, model, overlap=cfg.eval.overlap)
        pred = onehot_from_logits(logits.float().cpu(), multilabel)[0]  # [K, *S]
        label = torch.as_tensor(item["label"])
        label = label if multilabel else onehot_from_labelmap(label[None], pred.shape[0])[0]
        if i == 0 and snapshot is not None:
            snapshot.update(slice_of(item["image"], label, pred, multilabel))
        scores = dice_per_class(pred, label)
        rows.append(scores if multilabel else scores[1:])  # background is not scored
    # gathered as objects: a rank can hold no validation case (more ranks than cases), and then it does
    # not know the class count; a tensor all_reduce of mismatched sizes would fail or hang
    local = (np.sum(rows, axis=0, dtype=np.float64) if rows else None, len(rows))
    gathered: list[Any] = [local]
    if ctx.enabled:
        gathered = [None] * ctx.world_size
        dist.all_gather_object(gathered, local)
    parts = [g[0] for g in gathered if g[0] is not None]
    count = sum(g[1] for g in gathered)
    per_class = np.sum(parts, axis=0) / max(count, 1) if parts else np.zeros(1)
    out = {"val_dice": float(np.mean(per_class))}
    if subset:  # label values (1 = first organ); per_class has no background row unless multilabel
        rows_ = [v if multilabel else v - 1 for v in subset]
        out["val_dice_subset"] = float(np.mean(per_class[rows_]))
    return out


@torch.no_grad()
def validate_classification(model: nn.Module, loader: Any, labels: list[str], prec: Precision,
                            ctx: Dist, show: bool = False) -> dict[str, float]:
    model.eval()
    scores, targets = [], []
    for batch in progress_iter(loader, len(loader), "validation", "batch", enabled=show):
        with prec.autocast():
            logits = model(batch["image"].to(ctx.device))
        scores.append(torch.sigmoid(logits.float()).cpu())
        targets.append(batch["label"].float())
    s, t = torch.cat(scores), torch.cat(targets)
    if ctx.enabled:
        gathered: list[Any] = [None] * ctx.world_size
        dist.all_gather_object(gathered, (s, t))
        s, t = torch.cat([g[0] for g in gathered]), torch.cat([g[1] for g in gathered])
    result = multilabel_auc(t.numpy(), s.numpy(), labels)
    out = {"val_auc": float(result["mean_auc"])}
    out.update({f"val_auc/{name}": float(v["auc"]) for name, v in result["labels"].items()})
    return out
