"""What both stages do before and after their loop: the run folder, the up-front data check, seeds,
the data of the training split, resume, and the closing summary line."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import math

import torch
from omegaconf import DictConfig
from torch import nn

from selfmedmae.config import save_config, to_dict
from selfmedmae.errors import UserError
from selfmedmae.train.distributed import Dist, barrier, broadcast_flag, digests_across, setup
from selfmedmae.train.log import MetricsLog
from selfmedmae.train.loop import Precision, precision
from selfmedmae.train.rng import seed_everything
from selfmedmae.train.state import resume_training_state


@dataclass
class Run:
    cfg: DictConfig
    ctx: Dist
    dir: Path
    prec: Precision

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"


def input_size(cfg: DictConfig) -> list[int]:
    """The model's input: the 3D crop, or the 2D crop."""
    if cfg.data.spatial_dims == 2:
        return [int(cfg.data.crop_size)] * 2
    return [int(s) for s in cfg.data.roi_size]


def check_data(cfg: DictConfig) -> None:
    from selfmedmae.data.validate import check_or_raise

    check_or_raise(cfg)


def start(cfg: DictConfig) -> Run:
    """Distributed setup, refusal to overwrite a finished run, the data check, config and splits saved."""
    ctx = setup(cfg.run.device)
    run_dir = Path(cfg.run.dir)
    run = Run(cfg, ctx, run_dir, precision(cfg.run.precision, ctx.device))
    if run.last.exists() and not cfg.run.resume:
        raise UserError(f"{run.last}: run.dir already holds a run; continue it with run.resume=true "
                        f"or choose another run.dir (nothing was changed)")
    failed: Optional[UserError] = None
    if ctx.is_main:
        try:
            check_data(cfg)
        except UserError as exc:
            failed = exc
    if broadcast_flag(failed is not None, ctx):
        raise failed or UserError("the data check failed on rank 0")
    if ctx.is_main:
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        write_splits(cfg)
    barrier(ctx)
    seed_everything(cfg.run.seed)
    return run


def write_splits(cfg: DictConfig) -> None:
    """Which cases fell where, for the record (``<run.dir>/splits.json``)."""
    if cfg.data.spatial_dims == 2:
        from selfmedmae.data.dataset_2d import split_ids_2d

        (Path(cfg.run.dir) / "splits.json").write_text(json.dumps(split_ids_2d(cfg.data), indent=1))
    else:
        from selfmedmae.data.splits import write_splits as write_3d

        write_3d(cfg.run.dir, cfg.data, stage=cfg.stage)


def train_dataset(cfg: DictConfig, mode: str) -> Any:
    if cfg.data.spatial_dims == 2:
        from selfmedmae.data.dataset_2d import build_2d_dataset

        return build_2d_dataset(cfg.data, "pretrain" if mode == "pretrain" else "train", train=True)
    from selfmedmae.data.loader import build_train_dataset

    return build_train_dataset(cfg, mode)


def maybe_resume(run: Run, model: nn.Module, optimizer: torch.optim.Optimizer, kind: str) -> dict:
    """Restore from last.pt when run.resume is set; the start position otherwise."""
    if not run.cfg.run.resume:
        return {"epoch": 0, "step": 0}
    if not run.last.exists():
        raise UserError(f"{run.last}: run.resume=true but there is no checkpoint to resume from")
    return resume_training_state(run.last, model, optimizer, run.prec.scaler, kind)


def config_dict(cfg: DictConfig) -> dict:
    return to_dict(cfg)


def open_log(run: Run, resume_step: Optional[int]) -> MetricsLog:
    return MetricsLog(run.dir, run.ctx.is_main, resume_step)


def check_replicas(run: Run, model: nn.Module, log: MetricsLog, step: int) -> None:
    """Log every rank's weights digest; replicas that drifted apart are an error, not a result."""
    digests = digests_across(model, run.ctx)
    log.write({"kind": "end", "step": step, "epoch": run.cfg.train.epochs - 1, "weights_sha256": digests})
    if len(set(digests)) > 1:
        raise RuntimeError(f"the {run.ctx.world_size} replicas ended with different weights: {digests}")


def loss_text(loss: float) -> str:
    return f"final loss {loss:.4f}" if math.isfinite(loss) else "already complete"
