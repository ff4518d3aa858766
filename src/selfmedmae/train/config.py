"""Training and evaluation sections of the run config (the paper's recipe as defaults)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class TrainConfig:
    epochs: int = 800
    warmup_epochs: int = 40
    batch_size: int = 6  # global batch per optimiser step, in images / volumes (the lr rule counts these)
    # gradient accumulation (the original MAE's accum_iter): micro-steps per optimiser step. Each process
    # runs micro-batches of batch_size / (accum_iter x processes), so the global batch, and the lr the
    # rule gives, stay the paper's whatever the number of GPUs
    accum_iter: int = 1
    base_lr: Optional[float] = 1.5e-4  # lr = base_lr * effective batch / 256
    lr: Optional[float] = None  # absolute lr; overrides the base_lr rule when set
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    layer_decay: float = 1.0  # fine-tuning: 0.75
    clip_grad: Optional[float] = None
    save_every: int = 50  # epochs between periodic checkpoints (last.pt is written every epoch)
    save_every_steps: int = 0  # also write last.pt every N optimiser steps inside an epoch (0: off); resumes mid-epoch
    vis_every: int = 20  # pre-training: epochs between reconstruction figures
    eval_every: int = 1  # fine-tuning: epochs between validations
    log_every: int = 10  # steps between metrics.jsonl lines


@dataclass
class EvalConfig:
    split: str = "val"  # val | test | all
    overlap: float = 0.5  # sliding-window overlap (paper: 0.5)
    sw_batch_size: int = 4
    hd_percentile: float = 95.0
