"""Where fine-tuning starts (``init``): ``scratch``, ``mae:PATH`` (a native MAE / encoder / any native
checkpoint, or a folder written by ``selfmedmae export``), ``official:PATH`` (a checkpoint of the official SelfMedMAE MAE3D), ``imagenet:PATH`` (a local
2D ViT with timm keys, e.g. ImageNet or original-MAE weights; inflated for 3D). Nothing is downloaded."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from selfmedmae.config.rules import err
from selfmedmae.errors import UserError
from selfmedmae.models.checkpoint import read_checkpoint, read_native
from selfmedmae.models.exported import is_exported
from selfmedmae.models.convert import official_mae3d_state, unwrap_state_dict
from selfmedmae.models.transfer import TransferReport, encoder_state, load_2d_vit, load_encoder

KINDS = ("scratch", "mae", "native", "official", "imagenet")


def parse_init(init: str) -> tuple[str, str]:
    """``"mae:runs/x/last.pt"`` -> ``("mae", "runs/x/last.pt")``; ``"scratch"`` -> ``("scratch", "")``."""
    kind, _, path = str(init).partition(":")
    if kind not in KINDS or (kind != "scratch" and not path):
        raise err("init", f"{init!r} must be scratch, mae:PATH, official:PATH or imagenet:PATH")
    return kind, path


def _peek(path: str) -> dict:
    """The checkpoint's dict, memory-mapped where the file allows (model_args without reading every tensor)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if isinstance(obj, dict):
            return obj
    except Exception:  # old formats cannot be memory-mapped; read_checkpoint names every other problem
        pass
    return read_checkpoint(path)


def check_init(init: str, dims: int, input_key: str, may_be_missing: bool = False,
               model: Optional[Dict[str, int]] = None) -> None:
    """Whether ``init`` can start a model whose input has ``dims`` axes (set by the config key ``input_key``),
    before anything is read in full; a ConfigError naming ``init`` otherwise. ``may_be_missing``: a checkpoint
    that does not exist yet passes (``check-data`` before the pre-training that writes it). ``model``: the
    run's encoder (``embed_dim``, ``patch_size``, ``in_chans``, ``depth``), which a native or 2D ViT
    checkpoint's weights must fit (the width, patch and channels exactly; at least the blocks)."""
    kind, path = parse_init(init)
    if kind == "scratch":
        return
    if not Path(path).is_file() and not is_exported(path):
        if may_be_missing:
            return
        raise err("init", f"{path}: checkpoint file not found")
    ckpt = read_native(path) if is_exported(path) else _peek(path)
    if kind in ("mae", "native"):
        _check_native(ckpt, path, dims, input_key)
        if model:
            _check_fits(path, ckpt["model_args"]["encoder"], model)
        return
    sd = unwrap_state_dict(ckpt)
    if kind == "official":
        if "encoder_pos_embed" not in sd:
            raise err("init", f"{path}: no encoder_pos_embed: not a checkpoint of the official MAE3D")
        if dims != 3:
            raise err("init", f"{path}: the official MAE3D is 3D; this run's input ({input_key}) is {dims}D")
        return
    weight = sd.get("patch_embed.proj.weight", sd.get("encoder.patch_embed.proj.weight"))
    if weight is None:
        raise err("init", f"{path}: no patch_embed.proj.weight: not a ViT state dict with timm names")
    if weight.ndim != 4:
        raise err("init", f"{path}: imagenet: expects a 2D ViT (4D patch kernel), this one is "
                          f"{weight.ndim - 2}D; use mae:PATH for a selfmedmae checkpoint")
    if model:  # channels are summed or spread when inflating; the width and the patch must match
        _check_fits(path, {"embed_dim": int(weight.shape[0]), "patch_size": int(weight.shape[-1])}, model)


def _check_fits(path: str, source: Dict[str, Any], model: Dict[str, int]) -> None:
    """The source encoder's sizes against the run's: a ConfigError naming the first that does not fit."""
    names = {"embed_dim": "width (embed_dim)", "patch_size": "patch size", "in_chans": "input channels"}
    for key, what in names.items():
        theirs = source.get(key)
        theirs = theirs[0] if isinstance(theirs, (list, tuple)) else theirs
        if theirs is not None and key in model and int(theirs) != int(model[key]):
            raise err("init", f"{path}: the checkpoint's {what} is {theirs}, this run's model has {model[key]} "
                              f"(set model.* as in the run that wrote it, or start from scratch)")
    if source.get("depth") is not None and "depth" in model and int(source["depth"]) < int(model["depth"]):
        raise err("init", f"{path}: the checkpoint has {source['depth']} encoder blocks, this run's model "
                          f"{model['depth']}")


def _check_native(ckpt: dict, path: str, dims: int, input_key: str) -> None:
    if ckpt.get("format") != "selfmedmae":
        raise err("init", f"{path}: not a native selfmedmae checkpoint (use official:PATH or imagenet:PATH "
                          f"for other weights, or import it with `selfmedmae convert`)")
    try:
        src_dims = len(ckpt["model_args"]["encoder"]["img_size"])
    except (KeyError, TypeError):
        raise err("init", f"{path}: has no encoder model_args; not a checkpoint written by selfmedmae") from None
    if src_dims != dims:
        raise err("init", f"{path}: a {src_dims}D {ckpt.get('kind')} checkpoint cannot start a {dims}D run "
                          f"(its input {input_key} has {dims} axes)")


def initialise(model: nn.Module, init: str) -> TransferReport | None:
    """Load the encoder weights named by ``init`` into ``model.encoder`` (in place)."""
    kind, path = parse_init(init)
    if kind == "scratch":
        return None
    encoder = model.encoder  # type: ignore[attr-defined]
    if kind in ("mae", "native"):
        ckpt = read_native(path)
        args = ckpt["model_args"]["encoder"]
        patch = args["patch_size"]
        patch = [patch] * len(args["img_size"]) if isinstance(patch, int) else patch
        grid = [s // p for s, p in zip(args["img_size"], patch)]
        return load_encoder(encoder, encoder_state(ckpt["state_dict"]), grid, path)
    sd = unwrap_state_dict(read_checkpoint(path))
    if kind == "official":
        if "encoder_pos_embed" not in sd:
            raise UserError(f"{path}: no encoder_pos_embed: not a checkpoint of the official MAE3D")
        side = round(sd["encoder_pos_embed"].shape[1] ** (1 / 3))
        return load_encoder(encoder, encoder_state(official_mae3d_state(sd)), [side] * 3, path)
    return load_2d_vit(encoder, sd, path)  # imagenet: timm names, maybe under 'model'; inflated for 3D
