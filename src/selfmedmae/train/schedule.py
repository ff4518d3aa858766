"""Learning rate: the linear scaling rule, linear warm-up from 0, then half-cosine to ``min_lr``, set at
every iteration with a fractional epoch (as MAE and the official code)."""
from __future__ import annotations

import math

import torch


def scaled_lr(base_lr: float, effective_batch: int, lr: float | None = None) -> float:
    """lr = base_lr * effective batch / 256, unless an absolute lr is given."""
    return float(lr) if lr is not None else base_lr * effective_batch / 256


def lr_at(epoch: float, peak: float, epochs: float, warmup_epochs: float, min_lr: float = 0.0) -> float:
    """The lr at a fractional epoch in [0, epochs]."""
    if epoch < warmup_epochs:
        return peak * epoch / warmup_epochs
    span = max(epochs - warmup_epochs, 1e-12)
    progress = min((epoch - warmup_epochs) / span, 1.0)
    return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def apply_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
