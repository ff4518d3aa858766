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

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.criterion(logits.float(), batch["label"].to(logits.device))

    def validation(self, model: nn.Module, micro_batch: int, snapshot: Optional[dict]) -> Callable[[], dict]:
        run, ctx = self.run, self.run.ctx
        dataset = run.data.dataset("val", rank=ctx.rank, world_size=ctx.world_size)
        return lambda: validate_segmentation(model, dataset, self.labels, run.cfg, run.prec, ctx,
                                             show=ctx.is_main, snapshot=snapshot)


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
