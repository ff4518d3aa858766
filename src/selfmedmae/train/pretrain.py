"""``selfmedmae pretrain``: MAE self pre-training on the training split of the target dataset, 2D or 3D.

Writes under ``run.dir``: ``config.yaml``, ``splits.json``, ``metrics.jsonl`` (+ TensorBoard events),
``checkpoints/last.pt`` every epoch (and every ``train.save_every_steps`` steps when set),
``checkpoints/epoch_NNNN.pt`` every ``train.save_every`` epochs, ``checkpoints/encoder.pt`` (the encoder
alone, for fine-tuning), and ``figures/recon_epoch_NNNN.png`` (original / masked / reconstruction, the
paper's Fig. 2) every ``train.vis_every`` epochs.
"""
from __future__ import annotations

import time

import torch
from omegaconf import DictConfig

from selfmedmae.models.checkpoint import save_model, unwrap
from selfmedmae.models.factory import build_model, model_args
from selfmedmae.train import lifecycle
from selfmedmae.runtime.distributed import Dist, cleanup
from selfmedmae.train.rng import mix
from selfmedmae.train.trainer import Trainer
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
    run_ = lifecycle.start(cfg, "pretrain")
    ctx, tcfg, data = run_.ctx, cfg.train, run_.data
    try:
        args = model_args("mae", cfg.model, data.input_size, data.in_chans)
        model = build_model("mae", args).to(ctx.device)
        trainer = Trainer(run_, "mae", args, model, data.dataset("pretrain", train=True), layer_decay=1.0)
        micro_batch, accum = trainer.plan.micro_batch, trainer.plan.accum_iter
        length = model.encoder.num_patches
        figure = ReconstructionFigure(data, cfg.run.seed) if ctx.is_main else None

        def loss_fn(batch: dict, micro: int) -> tuple[torch.Tensor, int]:
            x = batch["image"].to(ctx.device, non_blocking=True)  # [micro_batch * crops, C, *S]
            noise = masking_noise(cfg.run.seed, micro, micro_batch, x.shape[0] // micro_batch, length, ctx, accum)
            loss, _, _ = trainer.net(x, noise=noise.to(ctx.device))
            return loss, micro_batch

        def after_epoch(epoch: int, step: int) -> None:
            if not ctx.is_main:
                return
            if (epoch + 1) % tcfg.save_every == 0:
                save_model(run_.checkpoints / f"epoch_{epoch + 1:04d}.pt", "mae", args, model)
            if epoch == 0 or (epoch + 1) % tcfg.vis_every == 0 or epoch + 1 == tcfg.epochs:
                png = figure.save_or_warn(model, run_.dir / "figures" / f"recon_epoch_{epoch + 1:04d}.png")
                if png is not None:
                    trainer.log.add_png("pretrain/reconstruction", png, step)  # TensorBoard's Images tab

        _, loss = trainer.fit(loss_fn, after_epoch)
        if ctx.is_main:
            save_model(run_.checkpoints / "encoder.pt", "vit", {"encoder": args["encoder"]}, unwrap(model).encoder)
            minutes = (time.perf_counter() - t_start) / 60
            print(f"pretrain done: {tcfg.epochs} epochs, {lifecycle.loss_text(loss)}, {minutes:.1f} min; "
                  f"checkpoints in {run_.checkpoints}, figures in {run_.dir / 'figures'}, "
                  f"metrics in {run_.dir / 'metrics.jsonl'}")
        trainer.close()
    except BaseException as exc:
        raise lifecycle.stopped(run_, exc) from None
    finally:
        lifecycle.release(run_)
        cleanup()
    return 0
