"""The epoch loop shared by pre-training and fine-tuning: how a global batch is cut (:func:`plan`), the
seeded loader (:func:`make_loader`), and :func:`train_one_epoch` (accumulation, the lr schedule per
iteration, precision, mid-epoch checkpoints, the stop on a non-finite loss). :class:`~selfmedmae.train.trainer.Trainer`
wires them for a stage, which supplies a ``loss_fn``."""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from selfmedmae.errors import UserError
from selfmedmae.runtime.distributed import Dist, broadcast_flag, mean_across
from selfmedmae.runtime.device import Precision
from selfmedmae.runtime.log import MetricsLog, Progress
from selfmedmae.train.rng import SeededDataset
from selfmedmae.train.schedule import apply_lr, lr_at


class DivergedError(UserError):
    """The loss became NaN or Inf; the stage adds which checkpoint is kept (if any was written yet)."""

    exit_code = 3


@dataclass
class Plan:
    """How a global batch is cut: per-rank micro-batches, accumulation, steps per epoch."""

    micro_batch: int
    accum_iter: int
    steps_per_epoch: int


def plan(train_cfg: Any, n_items: int, ctx: Dist, split_name: str = "train") -> Plan:
    per_step = ctx.world_size * train_cfg.accum_iter
    if train_cfg.batch_size % per_step:
        raise UserError(f"train.batch_size {train_cfg.batch_size} is not divisible by processes x "
                        f"train.accum_iter = {per_step}")
    steps = n_items // train_cfg.batch_size
    if steps == 0:
        raise UserError(f"the {split_name} split has {n_items} cases, fewer than train.batch_size "
                        f"{train_cfg.batch_size}")
    return Plan(train_cfg.batch_size // per_step, train_cfg.accum_iter, steps)


class ResumableSampler(DistributedSampler):
    """A DistributedSampler that can leave out the first ``skip`` indices of an epoch: a run resumed in the
    middle of an epoch loads only the samples of the steps it has still to take."""

    skip = 0

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return super().__len__() - self.skip


def make_loader(dataset: Any, batch: int, ctx: Dist, seed: int, workers: int,
                collate: Optional[Callable] = None) -> DataLoader:
    """Shuffled by (seed, epoch) through a DistributedSampler in one process too, so that N processes
    see, step by step, the same global batch as one process. ``loader.dataset`` is the :class:`SeededDataset`
    that seeds each item's random transforms by (seed, epoch, index)."""
    seeded = SeededDataset(dataset, seed)
    sampler = EpochIndices(ResumableSampler(seeded, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                            seed=seed, drop_last=True))
    # Persistent workers: starting them again each epoch cost more than the epoch's crops on small data
    # (12 steps an epoch in the hippocampus demo); the epoch travels with each index instead.
    loader = DataLoader(seeded, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True,
                        collate_fn=collate, pin_memory=ctx.device.type == "cuda",
                        persistent_workers=workers > 0)
    return loader


class EpochIndices(Sampler):
    """Yields (epoch, index) pairs of a sampler, so that :class:`SeededDataset` seeds by the epoch in
    worker processes that outlive an epoch. ``skip`` is the wrapped :class:`ResumableSampler`'s."""

    def __init__(self, sampler: ResumableSampler):
        self.sampler, self.epoch = sampler, 0

    @property
    def skip(self) -> int:
        return self.sampler.skip

    @skip.setter
    def skip(self, value: int) -> None:
        self.sampler.skip = value

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        return ((self.epoch, i) for i in self.sampler)


@dataclass
class Loop:
    """What each optimiser step needs besides the model, its data and its optimiser."""

    plan: Plan
    sched: dict  # lr schedule: peak, epochs, warmup_epochs, min_lr
    prec: Precision
    ctx: Dist
    log: MetricsLog
    progress: Progress
    clip_grad: Optional[float] = None
    log_every: int = 10
    save_every_steps: int = 0  # mid-epoch checkpoints (0: off)


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    loss_fn: Callable[[Any, int], tuple[torch.Tensor, int]], epoch: int, step: int, loop: Loop,
                    resume_at: Optional[dict] = None, save: Optional[Callable[[dict], None]] = None
                    ) -> tuple[int, float]:
    """One epoch of optimiser steps. ``loss_fn(batch, micro_index)`` -> (loss, samples in the batch).
    Returns the new global step and the epoch's mean loss (over ranks).

    Mid-epoch checkpoints: every ``loop.save_every_steps`` global steps (not at the epoch's last step, which
    the caller saves) ``save(position)`` is called with ``{"step", "step_in_epoch", "loss_sum", "loss_count"}``;
    a run resumed from such a checkpoint passes it back as ``resume_at`` and continues with the same samples,
    masks and random draws as an uninterrupted run."""
    plan_, ctx, prec = loop.plan, loop.ctx, loop.prec
    first = int(resume_at["step_in_epoch"]) if resume_at else 0
    loader.sampler.set_epoch(epoch)  # type: ignore[union-attr]
    loader.sampler.skip = first * plan_.micro_batch * plan_.accum_iter  # type: ignore[union-attr]
    loader.dataset.set_epoch(epoch)  # type: ignore[attr-defined]  (a SeededDataset: make_loader's)
    model.train()
    total, count = (float(resume_at["loss_sum"]), int(resume_at["loss_count"])) if resume_at else (0.0, 0)
    micro = first * plan_.accum_iter
    if first:  # the generators were restored as they were after the epoch's iterator was made: do not draw again
        with torch.random.fork_rng(devices=[]):
            it = iter(loader)
    else:
        it = iter(loader)
    for i in range(first, plan_.steps_per_epoch):
        lr = lr_at(epoch + i / plan_.steps_per_epoch, **loop.sched)
        apply_lr(optimizer, lr)
        optimizer.zero_grad(set_to_none=True)
        step_loss, samples = 0.0, 0
        for a in range(plan_.accum_iter):
            batch = next(it)
            sync = a == plan_.accum_iter - 1 or not ctx.enabled
            with (contextlib.nullcontext() if sync else model.no_sync()):  # type: ignore[operator]
                with prec.autocast():
                    loss, n = loss_fn(batch, epoch * plan_.steps_per_epoch * plan_.accum_iter + micro)
                micro += 1
                scaled = loss / plan_.accum_iter
                (prec.scaler.scale(scaled) if prec.scaler else scaled).backward()
            step_loss += float(loss.detach()) / plan_.accum_iter
            samples += n
        if broadcast_flag(not torch.isfinite(torch.tensor(step_loss)), ctx):
            raise DivergedError(f"the loss became {step_loss} at epoch {epoch}, step {i}; stopped")
        if prec.scaler:
            prec.scaler.unscale_(optimizer)
        if loop.clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), loop.clip_grad)
        if prec.scaler:
            prec.scaler.step(optimizer)
            prec.scaler.update()
        else:
            optimizer.step()
        step += 1
        total, count = total + step_loss, count + 1
        rate = loop.progress.update(epoch, step_loss, lr, samples * ctx.world_size)
        if step % loop.log_every == 0 or i == plan_.steps_per_epoch - 1:
            loop.log.write({"kind": "train", "step": step, "epoch": epoch, "loss": step_loss, "lr": lr,
                            "samples_per_s": rate})
        if save is not None and loop.save_every_steps and step % loop.save_every_steps == 0 \
                and i < plan_.steps_per_epoch - 1:
            save({"step": step, "step_in_epoch": i + 1, "loss_sum": total, "loss_count": count})
    return step, mean_across({"loss": total / max(count, 1)}, ctx)["loss"]
