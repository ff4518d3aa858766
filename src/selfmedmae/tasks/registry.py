"""What fine-tuning learns, by ``task``: the model kind, its outputs, its loss, its validation and the
metric that picks ``best.pt``. The data tell the classes (:attr:`selfmedmae.data.facade.Data.labels`)."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from torch import nn
from torch.utils.data import DataLoader

from selfmedmae.tasks.validation import validate_classification, validate_segmentation
from selfmedmae.train.lifecycle import Run


class Segmentation:
    """UNETR: Dice + cross-entropy over softmax classes (label maps), or Dice over sigmoid regions (BraTS,
    as the official code); validated by mean Dice over whole validation volumes."""

    kind = "unetr"

    def __init__(self, run: Run):
        self.run, self.labels = run, run.data.labels
        self.num_classes = self.labels.out_channels
        self.metric = "val_dice_subset" if self.labels.subsets else "val_dice"
        if self.labels.multilabel:
            self.criterion = DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=0.0, smooth_dr=1e-6)
        else:
            self.criterion = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, smooth_nr=0.0,
                                        smooth_dr=1e-6)

    def loss(self, logits: torch.Tensor | list[torch.Tensor], batch: dict) -> torch.Tensor:
        if isinstance(logits, (list, tuple)):  # deep supervision: [full resolution, 1/2, 1/4, ...]
            return supervised_loss(self.criterion, logits, batch["label"])
        return self.criterion(logits.float(), batch["label"].to(logits.device))

    def validation(self, model: nn.Module, micro_batch: int, snapshot: Optional[dict]) -> Callable[[], dict]:
        run, ctx = self.run, self.run.ctx
        dataset = run.data.dataset("val", rank=ctx.rank, world_size=ctx.world_size)
        return lambda: validate_segmentation(model, dataset, self.labels, run.cfg, run.prec, ctx,
                                             show=ctx.is_main, snapshot=snapshot)


def supervision_weights(n: int) -> list[float]:
    """nnU-Net's deep-supervision weights: halving from the full-resolution output down, summing to 1."""
    raw = [0.5 ** i for i in range(n)]
    return [w / sum(raw) for w in raw]


def supervised_loss(criterion: Callable, outputs: list[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
    """Weighted sum of ``criterion`` over ``outputs`` [B, K, *S / 2^i], the label [B, L, *S] brought to each
    output's grid by nearest neighbour (``nearest-exact``, as nnU-Net v2's ``DownsampleSegForDSTransform``)."""
    label = label.to(outputs[0].device)
    total = outputs[0].new_zeros((), dtype=torch.float32)
    for weight, out in zip(supervision_weights(len(outputs)), outputs):
        target = label
        if tuple(out.shape[2:]) != tuple(label.shape[2:]):
            target = F.interpolate(label.float(), size=out.shape[2:], mode="nearest-exact").to(label.dtype)
        total = total + weight * criterion(out.float(), target)  # target [B, L, *out's grid]
    return total


class Classification:
    """ViT + linear head: one sigmoid per label (multi-label findings), binary cross-entropy; validated by
    the mean ROC AUC over labels."""

    kind = "classifier"
    metric = "val_auc"

    def __init__(self, run: Run):
        self.run, self.labels = run, run.data.labels
        self.num_classes = len(self.labels.names)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), batch["label"].to(logits.device).float())

    def validation(self, model: nn.Module, micro_batch: int, snapshot: Optional[dict]) -> Callable[[], dict]:
        run, ctx = self.run, self.run.ctx
        dataset = run.data.dataset("val", rank=ctx.rank, world_size=ctx.world_size)
        loader = DataLoader(dataset, batch_size=max(1, micro_batch), num_workers=run.cfg.data.num_workers)
        return lambda: validate_classification(model, loader, self.labels, run.prec, ctx, show=ctx.is_main)


TASKS: dict[str, Any] = {"segmentation": Segmentation, "classification": Classification}
