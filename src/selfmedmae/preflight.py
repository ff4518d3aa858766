"""One up-front check of a whole resolved run config, before any data is read or any file written.

:func:`validate` is called by every command (``pretrain``, ``finetune``, ``check-data``, ``evaluate``,
``predict``; ``convert`` uses :func:`check_heads`). The config loader already refuses unknown keys and
wrong types; this module refuses values that are well-typed but unusable: ranges (``mask_ratio`` in [0, 1)
and leaving at least one patch visible and one masked, ``lr > 0``, ``epochs > 0``, ...), shapes (``roi_size``
has one size per spatial axis, each divisible by ``patch_size``), heads dividing widths, unknown presets,
a missing GPU, a config whose ``stage`` is not the command, an ``init`` checkpoint of the wrong kind or
dimensionality, and ``train.lr`` set beside a non-default ``train.base_lr`` (lr would win silently).

Errors are :class:`~selfmedmae.config.ConfigError`: one line that names the key; the CLI exits with 2.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import torch

from selfmedmae.config.rules import check_path, choice, err, in_range, positive
from selfmedmae.errors import UserError
from selfmedmae.data.formats import check_data_settings, check_task, input_key, input_shape
from selfmedmae.models.factory import DECODERS, HEAD_KINDS, SLIDING_WINDOW_KINDS
from selfmedmae.models.initialise import check_init
from selfmedmae.models.presets import check_heads, decoder_sizes, sizes as model_sizes
from selfmedmae.runtime.device import check_precision, device_for

SPLITS = ("val", "test", "all")
RESUME = (True, False, "auto")
DEFAULT_BASE_LR = 1.5e-4  # the schema default (train/config.py): set elsewhere it is the user's choice
TRAINING = ("pretrain", "finetune")


# ----------------------------------------------------------------------------------------------- model
def check_model(cfg: Any, command: str) -> None:
    sizes = model_sizes(cfg.model)
    check_heads(sizes["embed_dim"], sizes["num_heads"], "model.num_heads")
    positive(cfg, "model.patch_size")
    positive(cfg, "model.mlp_ratio")
    in_range(cfg, "model.drop_path_rate", 0.0, 1.0)
    choice(cfg, "model.decoder", DECODERS)
    patch = int(cfg.model.patch_size)
    shape = input_shape(cfg)
    where = input_key(cfg)
    if any(s <= 0 for s in shape):
        raise err(where, f"{shape}: sizes must be > 0")
    if any(s % patch for s in shape):
        raise err("model.patch_size", f"{patch} does not divide the input {shape} ({where}); every input size "
                                       f"must be a multiple of the patch")
    length = math.prod(s // patch for s in shape)
    if command == "pretrain":
        ratio = cfg.model.mask_ratio
        in_range(cfg, "model.mask_ratio", 0.0, 1.0)
        keep = int(length * (1 - ratio))
        if keep < 1 or keep >= length:
            raise err("model.mask_ratio", f"{ratio} keeps {keep} of the {length} patches visible; MAE needs at "
                                           f"least one visible and one masked patch")
        decoder = decoder_sizes(cfg.model)  # each > 0, else a ConfigError naming the key
        check_heads(decoder["decoder_embed_dim"], decoder["decoder_num_heads"], "model.decoder_num_heads")
    if command == "finetune" and HEAD_KINDS.get(cfg.task) == "unetr":  # the decoder's own limits
        check_decoder(cfg, patch, sizes["depth"])


def check_decoder(cfg: Any, patch: int, depth: int) -> None:
    """The segmentation decoder: a power-of-two patch; UNETR's skip blocks, Primus's lack of them."""
    name = "UNETR" if cfg.model.decoder == "unetr" else "the Primus decoder"
    if patch < 2 or 2 ** round(math.log2(patch)) != patch:
        raise err("model.patch_size", f"{patch}: {name} needs a power-of-two patch (2, 4, 8, 16, ...)")
    positive(cfg, "model.feature_size")
    skips = cfg.model.skip_blocks
    stages = round(math.log2(patch))
    if cfg.model.decoder == "primus":
        if skips is not None:
            raise err("model.skip_blocks", f"{list(skips)}: the Primus decoder has no skip connections; "
                                           f"set model.skip_blocks=null")
        if cfg.model.deep_supervision:
            raise err("model.deep_supervision", "UNETR only; the Primus decoder has no supervised lower "
                                                "resolutions (set model.deep_supervision=false)")
        return
    if cfg.model.deep_supervision and stages < 3:
        raise err("model.deep_supervision", f"a patch of {patch} leaves UNETR no lower-resolution stage to "
                                            f"supervise (nnU-Net's weighting needs a patch of 8 or more)")
    if skips is not None:
        if len(skips) != stages - 1:
            raise err("model.skip_blocks", f"{list(skips)}: a patch of {patch} needs {stages - 1} block indices")
        if any(not 0 <= int(s) < depth for s in skips):
            raise err("model.skip_blocks", f"{list(skips)}: block indices count from 0 and must be below "
                                           f"depth {depth}")
    elif depth < stages - 1:
        raise err("model.depth", f"{depth} blocks are too few for UNETR's {stages - 1} skip connections")


# ------------------------------------------------------------------------------------------------ data
def check_data(cfg: Any, command: str) -> None:
    """The data section, by the rules of its format (:mod:`selfmedmae.data.settings`)."""
    check_data_settings(cfg)


# ------------------------------------------------------------------------------------------- train/run
def check_train(cfg: Any) -> None:
    t = cfg.train
    positive(cfg, "train.epochs")
    positive(cfg, "train.warmup_epochs", allow_zero=True)
    positive(cfg, "train.batch_size")
    positive(cfg, "train.accum_iter")
    if t.batch_size % t.accum_iter:
        raise err("train.accum_iter", f"{t.accum_iter} does not divide train.batch_size {t.batch_size}")
    positive(cfg, "train.lr")
    positive(cfg, "train.base_lr")
    if t.lr is None and t.base_lr is None:
        raise err("train.lr", "neither train.lr nor train.base_lr is set")
    if t.lr is not None and t.base_lr is not None and t.base_lr != DEFAULT_BASE_LR:
        raise err("train.lr", f"{t.lr} is set beside train.base_lr {t.base_lr}; lr would silently win. Keep one "
                               f"(add train.base_lr=null to use lr, or train.lr=null to use the base_lr rule)")
    positive(cfg, "train.min_lr", allow_zero=True)
    positive(cfg, "train.weight_decay", allow_zero=True)
    if len(t.betas) != 2 or any(not 0 <= b < 1 for b in t.betas):
        raise err("train.betas", f"{list(t.betas)} must be two numbers in [0, 1)")
    in_range(cfg, "train.layer_decay", 0.0, 1.0, hi_open=False, lo_open=True)
    positive(cfg, "train.clip_grad")
    for key in ("save_every", "vis_every", "eval_every", "log_every"):
        positive(cfg, f"train.{key}")
    if "save_every_steps" in t:
        positive(cfg, "train.save_every_steps", allow_zero=True)


def check_eval(cfg: Any) -> None:
    choice(cfg, "eval.split", SPLITS)
    in_range(cfg, "eval.overlap", 0.0, 1.0)
    positive(cfg, "eval.sw_batch_size")
    choice(cfg, "eval.tta", (True, False))
    if cfg.eval.tta and HEAD_KINDS.get(cfg.task) not in SLIDING_WINDOW_KINDS:
        raise err("eval.tta", "mirroring is for segmentation's sliding-window inference; "
                              f"task {cfg.task} has none (set eval.tta=false)")
    in_range(cfg, "eval.hd_percentile", 0.0, 100.0, hi_open=False, lo_open=True)


def check_stage(cfg: Any, command: str) -> None:
    if command in TRAINING and cfg.stage != command:
        other = "fine-tuning" if cfg.stage == "finetune" else "pre-training"
        raise err("stage", f"this is a {other} config (stage: {cfg.stage}), given to `selfmedmae {command}`; "
                            f"run `selfmedmae {cfg.stage}` with it, or set stage={command}")
    if command == "finetune":
        check_task(cfg)
    if command == "pretrain" and str(cfg.init) != "scratch":
        raise err("init", f"{cfg.init!r}: pre-training always starts from scratch; init is for fine-tuning")
    if cfg.run.resume not in RESUME:
        raise err("run.resume", f"{cfg.run.resume!r} is not one of true, false, auto")


# ----------------------------------------------------------------------------------------------- entry
def validate(cfg: Any, command: str) -> None:
    """Every check for ``command`` (pretrain | finetune | check-data | evaluate | predict); raises on the first
    problem, one line naming the key. ``check-data`` checks the config as its ``stage`` would run it, except
    the device (data are often checked on a machine without the GPU)."""
    check_paths(cfg)
    check_data(cfg, command)
    stage = str(cfg.stage) if command == "check-data" else command
    if stage in TRAINING:
        check_stage(cfg, stage)
        check_train(cfg)
    check_model(cfg, stage if stage in TRAINING else "inference")
    check_eval(cfg)
    if command in ("evaluate", "predict"):  # an override may have put other data under the model
        check_task(cfg)
    if command in TRAINING:
        check_precision(str(cfg.run.precision), device_for(cfg.run.device))
    if stage == "finetune":
        sizes = model_sizes(cfg.model)
        model = {"embed_dim": sizes["embed_dim"], "depth": sizes["depth"], "patch_size": int(cfg.model.patch_size),
                 "in_chans": int(cfg.data.in_chans)}
        check_init(str(cfg.init), len(input_shape(cfg)), input_key(cfg), may_be_missing=command == "check-data",
                   model=model)


def batch_problem(cfg: Any, data: Any) -> Optional[str]:
    """A training batch larger than the split it is drawn from, as a one-line problem naming
    train.batch_size; None when it fits. The loader drops an incomplete last batch (drop_last), so such a run
    would take no step at all. ``data``: the run's :class:`selfmedmae.data.Data`, already checked."""
    stage = str(cfg.stage)
    split = "pretrain" if stage == "pretrain" else "train"
    try:
        n = len(data.items(split, stage))
    except UserError:  # a split that cannot be formed is the data check's to report, not the batch's
        return None
    batch = int(cfg.train.batch_size)
    if batch <= n:
        return None
    return (f"train.batch_size: {batch} is larger than the {n} {data.format.items_are} of the {split} split; an incomplete batch "
            f"is dropped (drop_last), so no training step would run (set train.batch_size <= {n})")


PATH_KEYS = ("run.dir", "data.root", "data.csv", "data.dataset_json", "data.split_file", "data.extra_unlabelled",
             "data.cache_dir")


def check_paths(cfg: Any) -> None:
    """Paths the operating system would refuse (a NUL, a name over 255 bytes, a too-long path), by key."""
    for key in PATH_KEYS:
        section, _, name = key.partition(".")
        value = cfg[section].get(name) if section in cfg else None
        if isinstance(value, str):
            check_path(key, value)
    check_path("init", str(cfg.get("init") or "").partition(":")[2])


MAX_WARNINGS = 10  # warnings check-data prints; problems are always all printed


def check_data_command(config: Any, overrides: Any = ()) -> int:
    """``selfmedmae check-data CONFIG``: every problem of the files and 2, or the summary and 0; the same
    check the training stages run first thing."""
    import sys

    from selfmedmae.config import load_config
    from selfmedmae.data import build

    cfg = load_config(config, list(overrides))
    validate(cfg, "check-data")
    data = build(cfg.data)
    report = data.check(str(cfg.stage))
    if not report.problems and str(cfg.stage) in TRAINING:
        problem = batch_problem(cfg, data)
        report.problems += [problem] if problem else []
    for warning in report.warnings[:MAX_WARNINGS]:
        print(f"warning: {warning}", file=sys.stderr)
    if len(report.warnings) > MAX_WARNINGS:
        print(f"warning: ... and {len(report.warnings) - MAX_WARNINGS} more warning(s)", file=sys.stderr)
    if report.problems:
        for problem in report.problems:
            print(problem, file=sys.stderr)
        print(f"check-data: {len(report.problems)} problem(s) found", file=sys.stderr)
        return 2
    print("\n".join(report.summary))
    print(f"check-data: OK ({len(report.warnings)} warning(s))")
    return 0
