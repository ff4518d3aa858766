"""``selfmedmae finetune``: UNETR segmentation (Dice + CE) or ViT + linear head classification (BCE),
started from ``init`` (MAE, scratch, ImageNet, official checkpoint), with layer-wise lr decay and drop
path. Validates on the validation split and keeps ``checkpoints/best.pt`` by its metric.

Writes under ``run.dir`` the same files as pre-training (config.yaml, splits.json, metrics.jsonl,
checkpoints/last.pt) plus ``checkpoints/best.pt``.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import list_data_collate
from monai.losses import DiceCELoss, DiceLoss
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from selfmedmae.models.checkpoint import atomic_save, native, unwrap
from selfmedmae.models.factory import build_model, model_args
from selfmedmae.train import lifecycle as common
from selfmedmae.train.distributed import cleanup
from selfmedmae.train.initialise import initialise
from selfmedmae.train.log import Progress
from selfmedmae.train.engine import make_loader, plan, train_epoch
from selfmedmae.train.optim import build_optimizer
from selfmedmae.train.schedule import scaled_lr
from selfmedmae.train.state import save_training_state
from selfmedmae.train.tb_images import overlay_panel
from selfmedmae.eval.validation import validate_classification, validate_segmentation


def _task(cfg: DictConfig) -> dict[str, Any]:
    """Model kind, outputs, loss and the validation to run, from the task and the data."""
    if cfg.task == "classification":
        from selfmedmae.data.dataset_2d import build_2d_dataset, classes_2d

        labels = classes_2d(cfg.data)
        return dict(kind="classifier", num_classes=len(labels), labels=labels, metric="val_auc",
                    loss=lambda logits, batch: F.binary_cross_entropy_with_logits(
                        logits.float(), batch["label"].to(logits.device).float()),
                    val_data=build_2d_dataset(cfg.data, "val", train=False))
    from selfmedmae.data.loader import build_eval_dataset, data_info

    info = data_info(cfg.data)
    if info.multilabel:  # BraTS regions: sigmoid per channel, Dice only (official)
        crit = DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=0.0, smooth_dr=1e-6)
    else:
        crit = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, smooth_nr=0.0, smooth_dr=1e-6)
    return dict(kind="unetr", num_classes=info.out_channels, labels=info.class_names, info=info,
                metric="val_dice_subset" if info.report_subset else "val_dice",
                loss=lambda logits, batch: crit(logits.float(), batch["label"].to(logits.device)),
                val_data=None, build_val=lambda rank, world: build_eval_dataset(cfg, "val", rank=rank,
                                                                                   world_size=world))


def run(cfg: DictConfig) -> int:
    t_start = time.perf_counter()
    run_ = common.start(cfg, "finetune")
    ctx, tcfg = run_.ctx, cfg.train
    progress = None
    try:
        task = _task(cfg)
        kind = task["kind"]
        args = model_args(kind, cfg.model, common.input_size(cfg), cfg.data.in_chans, task["num_classes"])
        model = build_model(kind, args)
        if not cfg.run.resume:
            report = initialise(model, cfg.init)
            if report is not None and ctx.is_main:
                print(f"init {cfg.init}: {report.summary()}")
        model.to(ctx.device)
        dataset = common.train_dataset(cfg, "finetune")
        plan_ = plan(tcfg, len(dataset), ctx)
        lr = scaled_lr(tcfg.base_lr, tcfg.batch_size, tcfg.lr)
        optimizer = build_optimizer(model, lr, tcfg.weight_decay, tcfg.betas, tcfg.layer_decay)
        start = common.maybe_resume(run_, model, optimizer, kind)
        best = float(start.get("best", -math.inf))
        net = DistributedDataParallel(model) if ctx.enabled else model
        loader, seeded = make_loader(dataset, plan_.micro_batch, ctx, cfg.run.seed, cfg.data.num_workers,
                                     list_data_collate)

        def loss_fn(batch: dict, micro: int) -> tuple[torch.Tensor, int]:
            logits = net(batch["image"].to(ctx.device, non_blocking=True))
            return task["loss"](logits, batch), plan_.micro_batch

        snapshot: dict = {}  # filled by each segmentation validation with its first volume's slice
        if kind == "unetr":
            val_data = task["build_val"](ctx.rank, ctx.world_size)

            def validate() -> dict[str, float]:
                return validate_segmentation(model, val_data, list(cfg.data.roi_size), task["info"].multilabel,
                                             cfg, run_.prec, ctx, task["info"].report_subset, show=ctx.is_main,
                                             snapshot=snapshot)
        else:
            val_loader = DataLoader(Subset(task["val_data"], range(ctx.rank, len(task["val_data"]), ctx.world_size)),
                                    batch_size=max(1, plan_.micro_batch), num_workers=cfg.data.num_workers)

            def validate() -> dict[str, float]:
                return validate_classification(model, val_loader, task["labels"], run_.prec, ctx, show=ctx.is_main)

        log = common.open_log(run_, start["step"] if cfg.run.resume else None)
        progress = Progress(tcfg.epochs * plan_.steps_per_epoch, start["step"], ctx.is_main, plan_.steps_per_epoch,
                            tcfg.log_every)
        sched = dict(peak=lr, epochs=tcfg.epochs, warmup_epochs=tcfg.warmup_epochs, min_lr=tcfg.min_lr)
        step, loss, scores = start["step"], math.nan, {}
        resume_at = start if start.get("step_in_epoch") else None  # a checkpoint from inside an epoch
        run_.started = True
        for epoch in range(start["epoch"], tcfg.epochs):

            def save_mid(position: dict) -> None:
                position = dict(position)
                save_training_state(run_.last, kind, args, model, optimizer, run_.prec.scaler, epoch,
                                    position.pop("step"), common.config_dict(cfg), best=best, **position)

            step, loss = train_epoch(net, loader, seeded, optimizer, loss_fn, run_.prec, plan_, sched, epoch,
                                     step, ctx, log, progress, tcfg.clip_grad, tcfg.log_every, resume_at,
                                     tcfg.save_every_steps, save_mid if ctx.is_main else None)
            resume_at = None
            log.write({"kind": "epoch", "step": step, "epoch": epoch, "loss": loss})
            progress.epoch_done(epoch, loss, max(g["lr"] for g in optimizer.param_groups))
            if (epoch + 1) % tcfg.eval_every == 0 or epoch + 1 == tcfg.epochs:
                scores = validate()
                log.write({"kind": "val", "step": step, "epoch": epoch, **scores})
                progress.note(f"validation after epoch {epoch + 1}: {task['metric']} {scores[task['metric']]:.4f}"
                              f" (best so far {max(best, scores[task['metric']]):.4f})")
                if snapshot:
                    log.add_image("val/overlay", overlay_panel(**snapshot), step)  # image | label | prediction
                if ctx.is_main and scores[task["metric"]] > best:
                    best = scores[task["metric"]]
                    atomic_save(native(kind, args, unwrap(model).state_dict(), config=common.config_dict(cfg),
                                       epoch=epoch + 1, metric={task["metric"]: best, **scores}),
                                run_.checkpoints / "best.pt")
            if ctx.is_main:
                save_training_state(run_.last, kind, args, model, optimizer, run_.prec.scaler, epoch + 1, step,
                                    common.config_dict(cfg), best=best)
        progress.close()
        common.check_replicas(run_, unwrap(model), log, step)
        if ctx.is_main:
            minutes = (time.perf_counter() - t_start) / 60
            print(f"finetune done: {tcfg.epochs} epochs, {common.loss_text(loss)}, best {task['metric']} "
                  f"{best:.4f}, {minutes:.1f} min; best model {run_.checkpoints / 'best.pt'}, "
                  f"metrics in {run_.dir / 'metrics.jsonl'}")
        log.close()
    except BaseException as exc:
        if progress is not None:
            progress.close()  # ends the bar's line, so an error message starts on a line of its own
        raise common.stopped(run_, exc) from None
    finally:
        common.release(run_)
        cleanup()
    return 0
