"""``selfmedmae pretrain``: MAE self pre-training on the training split of the target dataset, 2D or 3D.

Writes under ``run.dir``: ``config.yaml``, ``splits.json``, ``metrics.jsonl`` (+ TensorBoard events),
``checkpoints/last.pt`` every epoch (and every ``train.save_every_steps`` steps when set), ``checkpoints/epoch_NNNN.pt`` every ``train.save_every`` epochs,
``checkpoints/encoder.pt`` (the encoder alone, for fine-tuning), and ``figures/recon_epoch_NNNN.png``
(original / masked / reconstruction, the paper's Fig. 2) every ``train.vis_every`` epochs.
"""
from __future__ import annotations

import math
import time

import torch
from monai.data import list_data_collate
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel

from selfmedmae.models.checkpoint import save_model, unwrap
from selfmedmae.models.factory import build_model, model_args
from selfmedmae.train import lifecycle as common
from selfmedmae.train.distributed import Dist, cleanup
from selfmedmae.train.log import Progress
from selfmedmae.train.engine import make_loader, plan, train_epoch
from selfmedmae.train.optim import build_optimizer
from selfmedmae.train.rng import mix
from selfmedmae.train.schedule import scaled_lr
from selfmedmae.train.state import save_training_state
from selfmedmae.train.visualize import ReconstructionFigure


def masking_noise(seed: int, micro: int, n_items: int, crops: int, length: int, ctx: Dist,
                  accum_iter: int = 1) -> torch.Tensor:
    """Noise for the masks of one micro-batch, drawn for the whole global batch of its optimiser step and
    sliced to this micro-step and rank, so N processes with any accumulation mask every sample exactly as
    one process with one batch would. ``micro`` counts micro-batches from the start. [n_items * crops, length]."""
    step, a = divmod(micro, accum_iter)
    g = torch.Generator().manual_seed(mix(seed, 101, step))
    per_micro = n_items * ctx.world_size  # samples of one micro-step over all ranks
    noise = torch.rand(per_micro * accum_iter, crops, length, generator=g)  # [global batch, crops, L]
    # the sampler deals global positions round-robin to ranks; a rank's micro-batches are consecutive
    noise = noise[a * per_micro:(a + 1) * per_micro][ctx.rank::ctx.world_size]
    return noise.reshape(-1, length)


def run(cfg: DictConfig) -> int:
    t_start = time.perf_counter()
    run_ = common.start(cfg, "pretrain")
    ctx, tcfg = run_.ctx, cfg.train
    progress = None
    try:
        args = model_args("mae", cfg.model, common.input_size(cfg), cfg.data.in_chans)
        model = build_model("mae", args).to(ctx.device)
        dataset = common.train_dataset(cfg, "pretrain")
        plan_ = plan(tcfg, len(dataset), ctx)
        lr = scaled_lr(tcfg.base_lr, tcfg.batch_size, tcfg.lr)
        optimizer = build_optimizer(model, lr, tcfg.weight_decay, tcfg.betas, layer_decay=1.0)
        start = common.maybe_resume(run_, model, optimizer, "mae")
        net = DistributedDataParallel(model) if ctx.enabled else model
        loader, seeded = make_loader(dataset, plan_.micro_batch, ctx, cfg.run.seed, cfg.data.num_workers,
                                     list_data_collate)
        length = unwrap(model).encoder.num_patches
        figure = ReconstructionFigure(cfg, common.input_size(cfg), cfg.run.seed) if ctx.is_main else None

        def loss_fn(batch: dict, micro: int) -> tuple[torch.Tensor, int]:
            x = batch["image"].to(ctx.device, non_blocking=True)  # [micro_batch * crops, C, *S]
            crops = x.shape[0] // plan_.micro_batch
            noise = masking_noise(cfg.run.seed, micro, plan_.micro_batch, crops, length, ctx,
                                  plan_.accum_iter).to(ctx.device)
            loss, _, _ = net(x, noise=noise)
            return loss, plan_.micro_batch

        log = common.open_log(run_, start["step"] if cfg.run.resume else None)
        total_steps = tcfg.epochs * plan_.steps_per_epoch
        progress = Progress(total_steps, start["step"], ctx.is_main, plan_.steps_per_epoch, tcfg.log_every)
        sched = dict(peak=lr, epochs=tcfg.epochs, warmup_epochs=tcfg.warmup_epochs, min_lr=tcfg.min_lr)
        step, loss = start["step"], math.nan
        resume_at = start if start.get("step_in_epoch") else None  # a checkpoint from inside an epoch
        run_.started = True
        for epoch in range(start["epoch"], tcfg.epochs):

            def save_mid(position: dict) -> None:
                position = dict(position)
                save_training_state(run_.last, "mae", args, model, optimizer, run_.prec.scaler, epoch,
                                    position.pop("step"), common.config_dict(cfg), **position)

            step, loss = train_epoch(net, loader, seeded, optimizer, loss_fn, run_.prec, plan_, sched, epoch,
                                     step, ctx, log, progress, tcfg.clip_grad, tcfg.log_every, resume_at,
                                     tcfg.save_every_steps, save_mid if ctx.is_main else None)
            resume_at = None
            log.write({"kind": "epoch", "step": step, "epoch": epoch, "loss": loss})
            progress.epoch_done(epoch, loss, max(g["lr"] for g in optimizer.param_groups))
            if ctx.is_main:
                save_training_state(run_.last, "mae", args, model, optimizer, run_.prec.scaler, epoch + 1,
                                    step, common.config_dict(cfg))
                if (epoch + 1) % tcfg.save_every == 0:
                    save_model(run_.checkpoints / f"epoch_{epoch + 1:04d}.pt", "mae", args, model)
                if epoch == 0 or (epoch + 1) % tcfg.vis_every == 0 or epoch + 1 == tcfg.epochs:
                    png = figure.save(unwrap(model), run_.dir / "figures" / f"recon_epoch_{epoch + 1:04d}.png")
                    log.add_png("pretrain/reconstruction", png, step)  # TensorBoard's Images tab
        progress.close()
        common.check_replicas(run_, unwrap(model), log, step)
        if ctx.is_main:
            enc = unwrap(model).encoder
            save_model(run_.checkpoints / "encoder.pt", "vit", {"encoder": args["encoder"]}, enc)
            minutes = (time.perf_counter() - t_start) / 60
            print(f"pretrain done: {tcfg.epochs} epochs, {common.loss_text(loss)}, {minutes:.1f} min; "
                  f"checkpoints in {run_.checkpoints}, figures in {run_.dir / 'figures'}, "
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
