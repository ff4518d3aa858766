"""A stage's training, wired once: optimiser (with layer-wise lr decay), resume, the seeded loader, the
schedule, logs, and the epoch loop with its checkpoints (``last.pt`` after every epoch and, with
``train.save_every_steps``, inside epochs). A stage gives its model, dataset and loss, and what to do after
each epoch (validation, figures)::

    trainer = Trainer(run, "mae", args, model, dataset, layer_decay=1.0)
    step, loss = trainer.fit(loss_fn, after_epoch)
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from monai.data import list_data_collate
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from selfmedmae.config import to_dict
from selfmedmae.models.checkpoint import unwrap
from selfmedmae.runtime.distributed import barrier
from selfmedmae.train.engine import Loop, make_loader, plan, train_one_epoch
from selfmedmae.train.lifecycle import Run, auto_precision, check_replicas, maybe_resume
from selfmedmae.runtime.log import MetricsLog, Progress
from selfmedmae.train.optim import build_optimizer
from selfmedmae.train.schedule import scaled_lr
from selfmedmae.train.state import save_training_state

LossFn = Callable[[Any, int], "tuple[torch.Tensor, int]"]


class Trainer:
    def __init__(self, run: Run, kind: str, model_args: dict, model: nn.Module, dataset: Any,
                 layer_decay: float = 1.0):
        cfg, ctx, tcfg = run.cfg, run.ctx, run.cfg.train
        self.run, self.kind, self.model_args, self.model = run, kind, model_args, model
        self.plan = plan(tcfg, len(dataset), ctx)
        self.lr = scaled_lr(tcfg.base_lr, tcfg.batch_size, tcfg.lr)
        self.optimizer = build_optimizer(model, self.lr, tcfg.weight_decay, tcfg.betas, layer_decay)
        self.start = maybe_resume(run, model, self.optimizer, kind)
        if str(cfg.run.precision) == "auto":
            run.prec = auto_precision(run, kind, model_args, model, self._batch_shape(model_args),
                                      self.start.get("precision"))
        self.net = DistributedDataParallel(model) if ctx.enabled else model
        self.loader = make_loader(dataset, self.plan.micro_batch, ctx, cfg.run.seed, cfg.data.num_workers,
                                  list_data_collate)
        self.log = MetricsLog(run.dir, ctx.is_main, self.start["step"] if cfg.run.resume else None)
        progress = Progress(tcfg.epochs * self.plan.steps_per_epoch, self.start["step"], ctx.is_main,
                            self.plan.steps_per_epoch, tcfg.log_every)
        run.progress = progress  # closed by the run's end, however it ends
        self.loop = Loop(self.plan, dict(peak=self.lr, epochs=tcfg.epochs, warmup_epochs=tcfg.warmup_epochs,
                                         min_lr=tcfg.min_lr), run.prec, ctx, self.log, progress, tcfg.clip_grad,
                         tcfg.log_every, tcfg.save_every_steps)
        self.extra: dict = {}  # kept in last.pt beside the training state (fine-tuning: the best metric)
        if run.prec.record is not None:
            self.extra["precision"] = run.prec.record  # how `auto` chose: evaluate and predict follow it

    def _batch_shape(self, model_args: dict) -> list[int]:
        """[crops of one micro-batch, C, *spatial]: what one step of this run feeds its model."""
        enc, data = model_args["encoder"], self.run.cfg.data
        crops = int(data.num_samples) if len(enc["img_size"]) == 3 else 1
        return [self.plan.micro_batch * crops, int(enc["in_chans"]), *[int(s) for s in enc["img_size"]]]

    @property
    def progress(self) -> Progress:
        return self.loop.progress

    def save_last(self, epoch: int, step: int, **position: Any) -> None:
        """``last.pt``: the state to resume from; ``epoch`` is the one to run next (or the current one when
        ``position`` says where inside it)."""
        save_training_state(self.run.last, self.kind, self.model_args, self.model, self.optimizer,
                            self.run.prec.scaler, epoch, step, to_dict(self.run.cfg), **self.extra, **position)

    def fit(self, loss_fn: LossFn, after_epoch: Optional[Callable[[int, int], None]] = None) -> tuple[int, float]:
        """Train from the start position to ``train.epochs``; returns (global step, the last epoch's mean loss).
        ``after_epoch(epoch, step)`` runs on every rank before ``last.pt`` is written."""
        run, ctx, tcfg = self.run, self.run.ctx, self.run.cfg.train
        step, loss = self.start["step"], math.nan
        resume_at = self.start if self.start.get("step_in_epoch") else None  # a checkpoint from inside an epoch
        run.started = True
        for epoch in range(self.start["epoch"], tcfg.epochs):

            def save_mid(position: dict, epoch: int = epoch) -> None:
                self.save_last(epoch, **position)

            step, loss = train_one_epoch(self.net, self.loader, self.optimizer, loss_fn, epoch, step, self.loop,
                                         resume_at, save_mid if ctx.is_main else None)
            resume_at = None
            self.log.write({"kind": "epoch", "step": step, "epoch": epoch, "loss": loss})
            self.progress.epoch_done(epoch, loss, max(g["lr"] for g in self.optimizer.param_groups))
            if after_epoch is not None:
                after_epoch(epoch, step)
            if ctx.is_main:
                self.save_last(epoch + 1, step)
        self.progress.close()
        check_replicas(run, unwrap(self.model), self.log, step)
        return step, loss

    def close(self) -> None:
        """The run's normal end: every rank waits here until rank 0 has written its last files, so that the
        ranks tear the process group down together (one rank leaving early while rank 0 still holds its
        connection aborted once in CI: 'terminate called without an active exception'); then the logs."""
        barrier(self.run.ctx)
        self.log.close()
