"""Training checkpoints: a native model checkpoint plus optimiser, scaler, schedule position and random
generators, so ``run.resume=true`` continues exactly where ``checkpoints/last.pt`` left off."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from selfmedmae.errors import UserError
from selfmedmae.models.checkpoint import atomic_save, load_state_dict_checked, native, read_native, unwrap
from selfmedmae.train.rng import rng_state, set_rng_state


def save_training_state(path: Path, kind: str, model_args: dict, model: nn.Module,
                        optimizer: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler],
                        epoch: int, step: int, config: dict, **extra: Any) -> Path:
    """``epoch`` is the next epoch to run."""
    return atomic_save(native(kind, model_args, unwrap(model).state_dict(), optimizer=optimizer.state_dict(),
                              scaler=scaler.state_dict() if scaler else None, epoch=epoch, step=step,
                              rng=rng_state(), config=config, **extra), path)


def require_checkpoint(path: Path) -> None:
    """``run.resume=true`` needs ``last.pt``."""
    if not Path(path).is_file():
        raise UserError(f"{path}: run.resume=true but there is no checkpoint to resume from")


def resume_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                          scaler: Optional[torch.amp.GradScaler], kind: str) -> dict:
    """Restore model, optimiser, scaler and generators in place; return the checkpoint (epoch, step, ...)."""
    require_checkpoint(path)
    ckpt = read_native(path)
    if ckpt.get("kind") != kind or "optimizer" not in ckpt:
        raise UserError(f"{path}: not a {kind} training checkpoint")
    load_state_dict_checked(unwrap(model), ckpt["state_dict"], str(path))
    optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return ckpt
