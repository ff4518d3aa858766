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

from selfmedmae.config.rules import _choice, _err, _in_range, _positive
from selfmedmae.data.formats import check_data_settings, check_task, input_key, input_shape
from selfmedmae.models.checkpoint import read_checkpoint
from selfmedmae.models.convert import unwrap_state_dict
from selfmedmae.models.factory import DECODERS
from selfmedmae.models.initialise import KINDS
from selfmedmae.models.presets import PRESETS

SPLITS = ("val", "test", "all")
RESUME = (True, False, "auto")
DEFAULT_BASE_LR = 1.5e-4  # the schema default (train/config.py): set elsewhere it is the user's choice
TRAINING = ("pretrain", "finetune")


def check_heads(embed_dim: int, num_heads: int, key: str = "num_heads") -> None:
    """Attention splits the width into equal heads."""
    if num_heads <= 0 or embed_dim % num_heads:
        raise _err(key, f"{num_heads} heads do not divide the width {embed_dim} (embed_dim % num_heads must be 0)")


def yaml_error_text(exc: Exception) -> str:
    """'line 3, column 7: mapping values are not allowed here' for a YAML error (its first line alone has no place)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [exc.__class__.__name__])[0]
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return f"{exc.__class__.__name__}: {problem}"


# ----------------------------------------------------------------------------------------------- model
def model_sizes(cfg: Any) -> dict[str, int]:
    name = cfg.model.preset
    if name not in PRESETS:
        raise _err("model.preset", f"{name!r} is not one of {', '.join(PRESETS)}")
    sizes = dict(PRESETS[name])
    for key in ("embed_dim", "depth", "num_heads"):
        if cfg.model[key] is not None:
            sizes[key] = int(cfg.model[key])
            _positive(cfg, f"model.{key}")
    return sizes


def check_model(cfg: Any, command: str) -> None:
    sizes = model_sizes(cfg)
    check_heads(sizes["embed_dim"], sizes["num_heads"], "model.num_heads")
    _positive(cfg, "model.patch_size")
    _positive(cfg, "model.mlp_ratio")
    _in_range(cfg, "model.drop_path_rate", 0.0, 1.0)
    _choice(cfg, "model.decoder", DECODERS)
    patch = int(cfg.model.patch_size)
    shape = input_shape(cfg)
    where = input_key(cfg)
    if any(s <= 0 for s in shape):
        raise _err(where, f"{shape}: sizes must be > 0")
    if any(s % patch for s in shape):
        raise _err("model.patch_size", f"{patch} does not divide the input {shape} ({where}); every input size "
                                       f"must be a multiple of the patch")
    length = math.prod(s // patch for s in shape)
    if command == "pretrain":
        ratio = cfg.model.mask_ratio
        _in_range(cfg, "model.mask_ratio", 0.0, 1.0)
        keep = int(length * (1 - ratio))
        if keep < 1 or keep >= length:
            raise _err("model.mask_ratio", f"{ratio} keeps {keep} of the {length} patches visible; MAE needs at "
                                           f"least one visible and one masked patch")
        _positive(cfg, "model.decoder_embed_dim")
        _positive(cfg, "model.decoder_depth")
        check_heads(int(cfg.model.decoder_embed_dim), int(cfg.model.decoder_num_heads), "model.decoder_num_heads")
    if command == "finetune" and cfg.task == "segmentation":
        check_decoder(cfg, patch, sizes["depth"])


def check_decoder(cfg: Any, patch: int, depth: int) -> None:
    """The segmentation decoder: a power-of-two patch; UNETR's skip blocks, Primus's lack of them."""
    name = "UNETR" if cfg.model.decoder == "unetr" else "the Primus decoder"
    if patch < 2 or 2 ** round(math.log2(patch)) != patch:
        raise _err("model.patch_size", f"{patch}: {name} needs a power-of-two patch (2, 4, 8, 16, ...)")
    _positive(cfg, "model.feature_size")
    skips = cfg.model.skip_blocks
    stages = round(math.log2(patch))
    if cfg.model.decoder == "primus":
        if skips is not None:
            raise _err("model.skip_blocks", f"{list(skips)}: the Primus decoder has no skip connections; "
                                            f"set model.skip_blocks=null")
        if cfg.model.deep_supervision:
            raise _err("model.deep_supervision", "UNETR only; the Primus decoder has no supervised lower "
                                                 "resolutions (set model.deep_supervision=false)")
        return
    if cfg.model.deep_supervision and stages < 3:
        raise _err("model.deep_supervision", f"a patch of {patch} leaves UNETR no lower-resolution stage to "
                                             f"supervise (nnU-Net's weighting needs a patch of 8 or more)")
    if skips is not None:
        if len(skips) != stages - 1:
            raise _err("model.skip_blocks", f"{list(skips)}: a patch of {patch} needs {stages - 1} block indices")
        if any(not 0 <= int(s) < depth for s in skips):
            raise _err("model.skip_blocks", f"{list(skips)}: block indices count from 0 and must be below "
                                            f"depth {depth}")
    elif depth < stages - 1:
        raise _err("model.depth", f"{depth} blocks are too few for UNETR's {stages - 1} skip connections")


# ------------------------------------------------------------------------------------------------ data
def check_data(cfg: Any, command: str) -> None:
    """The data section, by the rules of its format (:mod:`selfmedmae.data.settings`)."""
    check_data_settings(cfg)


# ------------------------------------------------------------------------------------------- train/run
def check_train(cfg: Any) -> None:
    t = cfg.train
    _positive(cfg, "train.epochs")
    _positive(cfg, "train.warmup_epochs", allow_zero=True)
    _positive(cfg, "train.batch_size")
    _positive(cfg, "train.accum_iter")
    if t.batch_size % t.accum_iter:
        raise _err("train.accum_iter", f"{t.accum_iter} does not divide train.batch_size {t.batch_size}")
    _positive(cfg, "train.lr")
    _positive(cfg, "train.base_lr")
    if t.lr is None and t.base_lr is None:
        raise _err("train.lr", "neither train.lr nor train.base_lr is set")
    if t.lr is not None and t.base_lr is not None and t.base_lr != DEFAULT_BASE_LR:
        raise _err("train.lr", f"{t.lr} is set beside train.base_lr {t.base_lr}; lr would silently win. Keep one "
                               f"(add train.base_lr=null to use lr, or train.lr=null to use the base_lr rule)")
    _positive(cfg, "train.min_lr", allow_zero=True)
    _positive(cfg, "train.weight_decay", allow_zero=True)
    if len(t.betas) != 2 or any(not 0 <= b < 1 for b in t.betas):
        raise _err("train.betas", f"{list(t.betas)} must be two numbers in [0, 1)")
    _in_range(cfg, "train.layer_decay", 0.0, 1.0, hi_open=False, lo_open=True)
    _positive(cfg, "train.clip_grad")
    for key in ("save_every", "vis_every", "eval_every", "log_every"):
        _positive(cfg, f"train.{key}")
    if "save_every_steps" in t:
        _positive(cfg, "train.save_every_steps", allow_zero=True)


def check_eval(cfg: Any) -> None:
    _choice(cfg, "eval.split", SPLITS)
    _in_range(cfg, "eval.overlap", 0.0, 1.0)
    _positive(cfg, "eval.sw_batch_size")
    _choice(cfg, "eval.tta", (True, False))
    if cfg.eval.tta and cfg.task != "segmentation":
        raise _err("eval.tta", "mirroring is for segmentation's sliding-window inference; "
                               f"task {cfg.task} has none (set eval.tta=false)")
    _in_range(cfg, "eval.hd_percentile", 0.0, 100.0, hi_open=False, lo_open=True)


def check_device(name: str, precision: Optional[str] = None, key: str = "run.device") -> None:
    name = str(name)
    if name in ("auto", "cpu"):
        device_type = "cuda" if name == "auto" and torch.cuda.is_available() else "cpu"
    elif name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise _err(key, f"{name!r} asked for, but this machine has no usable GPU (use run.device=cpu or auto)")
        index = name.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise _err(key, f"{name!r}: this machine has GPUs cuda:0..cuda:{torch.cuda.device_count() - 1}")
        device_type = "cuda"
    else:
        raise _err(key, f"{name!r} is not a device (auto, cpu, cuda, cuda:N)")
    if precision == "fp16" and device_type != "cuda":
        raise _err("run.precision", "fp16 needs a GPU; use bf16 or fp32 on the CPU")


def check_stage(cfg: Any, command: str) -> None:
    if command in TRAINING and cfg.stage != command:
        other = "fine-tuning" if cfg.stage == "finetune" else "pre-training"
        raise _err("stage", f"this is a {other} config (stage: {cfg.stage}), given to `selfmedmae {command}`; "
                            f"run `selfmedmae {cfg.stage}` with it, or set stage={command}")
    if command == "finetune":
        check_task(cfg)
    if command == "pretrain" and str(cfg.init) != "scratch":
        raise _err("init", f"{cfg.init!r}: pre-training always starts from scratch; init is for fine-tuning")
    if cfg.run.resume not in RESUME:
        raise _err("run.resume", f"{cfg.run.resume!r} is not one of true, false, auto")


# ------------------------------------------------------------------------------------------------ init
def _peek(path: str) -> dict:
    """The checkpoint's dict, memory-mapped where the file allows (model_args without reading every tensor)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if isinstance(obj, dict):
            return obj
    except Exception:  # old formats cannot be memory-mapped; read_checkpoint names every other problem
        pass
    return read_checkpoint(path)


def check_init(cfg: Any, may_be_missing: bool = False) -> None:
    """``may_be_missing``: a checkpoint that does not exist yet passes (``check-data`` before the
    pre-training that writes it); one that exists is still checked."""
    init = str(cfg.init)
    kind, _, path = init.partition(":")
    if kind not in KINDS or (kind != "scratch" and not path):
        raise _err("init", f"{init!r} must be scratch, mae:PATH, official:PATH or imagenet:PATH")
    if kind == "scratch":
        return
    if not Path(path).is_file():
        if may_be_missing:
            return
        raise _err("init", f"{path}: checkpoint file not found")
    dims = len(input_shape(cfg))  # the axes of the model's input
    ckpt = _peek(path)
    if kind in ("mae", "native"):
        if ckpt.get("format") != "selfmedmae":
            raise _err("init", f"{path}: not a native selfmedmae checkpoint (use official:PATH or imagenet:PATH "
                               f"for other weights, or import it with `selfmedmae convert`)")
        try:
            src_dims = len(ckpt["model_args"]["encoder"]["img_size"])
        except (KeyError, TypeError):
            raise _err("init", f"{path}: has no encoder model_args; not a checkpoint written by selfmedmae") from None
        if src_dims != dims:
            raise _err("init", f"{path}: a {src_dims}D {ckpt.get('kind')} checkpoint cannot start a {dims}D run "
                               f"(its input {input_key(cfg)} has {dims} axes)")
        return

    sd = unwrap_state_dict(ckpt)
    if kind == "official":
        if "encoder_pos_embed" not in sd:
            raise _err("init", f"{path}: no encoder_pos_embed: not a checkpoint of the official MAE3D")
        if dims != 3:
            raise _err("init", f"{path}: the official MAE3D is 3D; this run's input ({input_key(cfg)}) is {dims}D")
        return
    weight = sd.get("patch_embed.proj.weight", sd.get("encoder.patch_embed.proj.weight"))
    if weight is None:
        raise _err("init", f"{path}: no patch_embed.proj.weight: not a ViT state dict with timm names")
    if weight.ndim != 4:
        raise _err("init", f"{path}: imagenet: expects a 2D ViT (4D patch kernel), this one is "
                           f"{weight.ndim - 2}D; use mae:PATH for a selfmedmae checkpoint")


# ----------------------------------------------------------------------------------------------- entry
def validate(cfg: Any, command: str) -> None:
    """Every check for ``command`` (pretrain | finetune | check-data | evaluate | predict); raises on the first
    problem, one line naming the key. ``check-data`` checks the config as its ``stage`` would run it, except
    the device (data are often checked on a machine without the GPU)."""
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
        check_device(cfg.run.device, str(cfg.run.precision))
    if stage == "finetune":
        check_init(cfg, may_be_missing=command == "check-data")
