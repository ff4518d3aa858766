"""``selfmedmae finetune``: UNETR segmentation (Dice + CE) or ViT + linear head classification (BCE),
started from ``init`` (MAE, scratch, ImageNet, official checkpoint), with layer-wise lr decay and drop
path. Validates on the validation split and keeps ``checkpoints/best.pt`` by its metric.

Writes under ``run.dir`` the same files as pre-training (config.yaml, splits.json, metrics.jsonl,
checkpoints/last.pt) plus ``checkpoints/best.pt``.
"""
from __future__ import annotations

import time

import torch
from omegaconf import DictConfig

from selfmedmae.config import to_dict
from selfmedmae.models.checkpoint import atomic_save, native
from selfmedmae.models.factory import build_model, model_args
from selfmedmae.models.initialise import initialise
from selfmedmae.train import lifecycle
from selfmedmae.runtime.distributed import cleanup
from selfmedmae.tasks import task_named
from selfmedmae.figures.tb_images import overlay_panel
from selfmedmae.train.trainer import Trainer


def run(cfg: DictConfig) -> int:
    t_start = time.perf_counter()
    run_ = lifecycle.start(cfg, "finetune")
    ctx, tcfg, data = run_.ctx, cfg.train, run_.data
    try:
        task = task_named(cfg.task)(data.labels)
        args = model_args(task.kind, cfg.model, data.input_size, data.in_chans, task.num_classes)
        model = build_model(task.kind, args)
        if not cfg.run.resume:
            report = initialise(model, cfg.init)
            if report is not None and ctx.is_main:
                print(f"init {cfg.init}: {report.summary()}")
        model.to(ctx.device)
        trainer = Trainer(run_, task.kind, args, model, data.dataset("train", train=True), tcfg.layer_decay)
        trainer.extra["best"] = float(trainer.start.get("best", float("-inf")))
        labels = data.labels.to_dict()  # in best.pt and last.pt: evaluate and predict need no training data
        trainer.extra["labels"] = labels
        snapshot: dict = {}  # filled by each segmentation validation with its first volume's slice
        validate = task.validation(model, data, cfg, run_.prec, ctx, trainer.plan.micro_batch, snapshot)

        def loss_fn(batch: dict, micro: int) -> tuple[torch.Tensor, int]:
            logits = trainer.net(batch["image"].to(ctx.device, non_blocking=True))
            return task.loss(logits, batch), trainer.plan.micro_batch

        def after_epoch(epoch: int, step: int) -> None:
            if (epoch + 1) % tcfg.eval_every and epoch + 1 != tcfg.epochs:
                return
            scores = validate()
            trainer.log.write({"kind": "val", "step": step, "epoch": epoch, **scores})
            best = trainer.extra["best"]
            trainer.progress.note(f"validation after epoch {epoch + 1}: {task.metric} {scores[task.metric]:.4f}"
                                  f" (best so far {max(best, scores[task.metric]):.4f})")
            if snapshot:
                trainer.log.add_image("val/overlay", overlay_panel(**snapshot), step)  # image | label | prediction
            if ctx.is_main and scores[task.metric] > best:
                trainer.extra["best"] = scores[task.metric]
                atomic_save(native(task.kind, args, model.state_dict(), config=to_dict(cfg), labels=labels,
                                   epoch=epoch + 1, metric={task.metric: scores[task.metric], **scores},
                                   **({"precision": run_.prec.record} if run_.prec.record else {})),
                            run_.checkpoints / "best.pt")

        _, loss = trainer.fit(loss_fn, after_epoch)
        if ctx.is_main:
            minutes = (time.perf_counter() - t_start) / 60
            print(f"finetune done: {tcfg.epochs} epochs, {lifecycle.loss_text(loss)}, best {task.metric} "
                  f"{trainer.extra['best']:.4f}, {minutes:.1f} min; best model {run_.checkpoints / 'best.pt'}, "
                  f"metrics in {run_.dir / 'metrics.jsonl'}")
        trainer.close()
    except BaseException as exc:
        raise lifecycle.stopped(run_, exc) from None
    finally:
        lifecycle.release(run_)
        cleanup()
    return 0
