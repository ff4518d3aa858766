"""Import checkpoints of the official SelfMedMAE code and of the original MAE into native checkpoints.

Sources (``selfmedmae convert SRC DST --from ...``):
- ``official-mae3d``: the official ``MAE3D`` (keys ``encoder_pos_embed``, ``encoder.*``,
  ``encoder_to_decoder``, ``decoder.blocks/norm/head``, ``mask_token``);
- ``official-unetr3d``: the official ``UNETR3D`` (``encoder.*`` ViTBackbone, ``decoder.*`` MONAI blocks);
- ``mae2d``: the original MAE's ``MaskedAutoencoderViT`` (flat timm-style keys);
- ``vit2d``: a timm-named ViT or the original MAE's fine-tuned classifier (``head``, ``fc_norm``).

Sizes are read from tensor shapes; what a state dict cannot tell (``num_heads``, ``decoder_num_heads``,
and where needed ``img_size``) comes as ``key=value``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import yaml

from selfmedmae.config.overrides import parse_overrides
from selfmedmae.errors import UserError
from selfmedmae.models.checkpoint import atomic_save, load_state_dict_checked, native, read_checkpoint
from selfmedmae.models.factory import build_model
from selfmedmae.models.pos_embed import with_cls_row
from selfmedmae.models.presets import check_heads

State = dict[str, torch.Tensor]


def unwrap_state_dict(ckpt: dict) -> State:
    """The tensors of a checkpoint: under 'state_dict' or 'model' or at the top; 'module.' stripped."""
    for key in ("state_dict", "model"):
        if isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    sd = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def model_values(items: Sequence[str]) -> dict[str, Any]:
    """``num_heads=12`` items -> {"num_heads": 12} (values read as YAML)."""
    return {key: yaml.safe_load(value) for key, value in parse_overrides(items)}


def _need(opts: dict[str, Any], key: str, src: str) -> Any:
    if key not in opts:
        raise UserError(f"{src}: {key} cannot be read from the state dict; give it as {key}=N")
    value = opts.pop(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{key}: {value!r} must be a whole number > 0")
    return value


def _count_blocks(sd: State, prefix: str) -> int:
    ids = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(ids) + 1 if ids else 0


def _grid_side(tokens: int, dims: int, src: str) -> int:
    side = round(tokens ** (1 / dims))
    if side ** dims != tokens:
        raise UserError(f"{src}: {tokens} position rows are not a cubic/square grid; give img_size=[...]")
    return side


def _encoder_args(sd: State, prefix: str, n_tokens: int, opts: dict[str, Any], src: str,
                  pos_embed: str) -> dict[str, Any]:
    w = sd[f"{prefix}patch_embed.proj.weight"]  # [D, C, *patch]
    dims, patch = w.ndim - 2, list(w.shape[2:])
    img_size = opts.pop("img_size", None)
    if img_size is None:
        img_size = [_grid_side(n_tokens, dims, src) * p for p in patch]
    depth = _count_blocks(sd, f"{prefix}blocks.")
    mlp_hidden = sd[f"{prefix}blocks.0.mlp.fc1.weight"].shape[0]
    return dict(img_size=[int(s) for s in img_size], patch_size=patch, in_chans=int(w.shape[1]),
                embed_dim=int(w.shape[0]), depth=depth, num_heads=int(_need(opts, "num_heads", src)),
                mlp_ratio=mlp_hidden / w.shape[0], qkv_bias=f"{prefix}blocks.0.attn.qkv.bias" in sd,
                drop_path_rate=float(opts.pop("drop_path_rate", 0.0)), pos_embed=pos_embed)


def official_mae3d_state(sd: State) -> State:
    """The official MAE3D's tensors under our names (``encoder.*``, ``decoder_*``); its position tables get
    the zero class-token row. Shared by ``convert`` and fine-tuning's ``init=official:PATH``."""
    out: State = {}
    for k, v in sd.items():
        if k == "encoder_pos_embed":
            out["encoder.pos_embed"] = with_cls_row(v[0])  # the class token gets no position: zero row
        elif k == "decoder_pos_embed":
            out["decoder_pos_embed"] = with_cls_row(v[0])
        elif k.startswith("encoder_to_decoder."):
            out["decoder_embed." + k.split(".", 1)[1]] = v
        elif k.startswith("decoder.blocks."):
            out["decoder_blocks." + k[len("decoder.blocks."):]] = v
        elif k.startswith("decoder.norm."):
            out["decoder_norm." + k[len("decoder.norm."):]] = v
        elif k.startswith("decoder.head."):
            out["decoder_pred." + k[len("decoder.head."):]] = v
        elif k.startswith("encoder.head."):
            continue  # an Identity in the official encoder; nothing to keep
        else:
            out[k] = v
    return out


def from_official_mae3d(sd: State, opts: dict[str, Any], src: str) -> tuple[str, dict, State]:
    enc = _encoder_args(sd, "encoder.", sd["encoder_pos_embed"].shape[1], opts, src, "sincos")
    args = dict(encoder=enc, decoder_embed_dim=int(sd["mask_token"].shape[-1]),
                decoder_depth=_count_blocks(sd, "decoder.blocks."),
                decoder_num_heads=int(_need(opts, "decoder_num_heads", src)),
                mask_ratio=float(opts.pop("mask_ratio", 0.75)), norm_pix_loss=True, norm_pix_unbiased=False)
    return "mae", args, official_mae3d_state(sd)


def from_official_unetr3d(sd: State, opts: dict[str, Any], src: str) -> tuple[str, dict, State]:
    enc = _encoder_args(sd, "encoder.", sd["encoder.pos_embed"].shape[1] - 1, opts, src, "learnable")
    args = dict(encoder=enc, num_classes=int(sd["decoder.out.conv.conv.weight"].shape[0]),
                feature_size=int(sd["decoder.encoder1.layer.conv1.conv.weight"].shape[0]),
                skip_blocks=opts.pop("skip_blocks", None))
    # MONAI 0.9 built a 1x1 'conv3' in every residual block, used or not; newer MONAI builds it only
    # where the block changes width. Keys the model does not have are dropped below by name.
    return "unetr", args, dict(sd)


def from_mae2d(sd: State, opts: dict[str, Any], src: str) -> tuple[str, dict, State]:
    enc = _encoder_args(sd, "", sd["pos_embed"].shape[1] - 1, opts, src, "sincos")
    args = dict(encoder=enc, decoder_embed_dim=int(sd["mask_token"].shape[-1]),
                decoder_depth=_count_blocks(sd, "decoder_blocks."),
                decoder_num_heads=int(_need(opts, "decoder_num_heads", src)),
                mask_ratio=float(opts.pop("mask_ratio", 0.75)),
                norm_pix_loss=bool(opts.pop("norm_pix_loss", True)), norm_pix_unbiased=True)
    out = {k if k.startswith(("decoder", "mask_token")) else f"encoder.{k}": v for k, v in sd.items()}
    return "mae", args, out


def from_vit2d(sd: State, opts: dict[str, Any], src: str) -> tuple[str, dict, State]:
    enc = _encoder_args(sd, "", sd["pos_embed"].shape[1] - 1, opts, src, "learnable")
    sd = {k: v for k, v in sd.items() if not k.startswith("decoder") and k != "mask_token"}
    out = {k if k.startswith(("head.", "fc_norm.")) else f"encoder.{k}": v for k, v in sd.items()}
    if "head.weight" not in sd:
        return "vit", {"encoder": enc}, out
    args = dict(encoder=enc, num_classes=int(sd["head.weight"].shape[0]), global_pool="fc_norm.weight" in sd)
    return "classifier", args, out


CONVERTERS: dict[str, Callable[[State, dict[str, Any], str], tuple[str, dict, State]]] = {
    "official-mae3d": from_official_mae3d,
    "official-unetr3d": from_official_unetr3d,
    "mae2d": from_mae2d,
    "vit2d": from_vit2d,
}


def convert_state_dict(sd: State, source_format: str, overrides: dict[str, Any] | Sequence[str] = (),
                       src: str = "state dict") -> tuple[str, dict, State]:
    """(kind, model_args, native state dict) for a foreign state dict; checked against the model."""
    opts = model_values(overrides) if not isinstance(overrides, dict) else dict(overrides)
    try:
        kind, args, out = CONVERTERS[source_format](sd, opts, src)
    except KeyError as exc:
        raise UserError(f"{src}: missing key {exc} for --from {source_format}") from None
    if opts:
        raise UserError(f"{src}: unknown option(s) for --from {source_format}: {', '.join(opts)}")
    check_heads(args["encoder"]["embed_dim"], args["encoder"]["num_heads"], "num_heads")
    if "decoder_num_heads" in args:
        check_heads(args["decoder_embed_dim"], args["decoder_num_heads"], "decoder_num_heads")
    model = build_model(kind, args)
    own = model.state_dict()
    dropped = [k for k in out if k not in own and re.search(r"\.(conv3|norm3)\.", k)]
    out = {k: v for k, v in out.items() if k not in dropped}
    load_state_dict_checked(model, out, src)
    return kind, args, out


def convert_file(src: str | Path, dst: str | Path, source_format: str,
                 overrides: Sequence[str] = ()) -> Path:
    sd = unwrap_state_dict(read_checkpoint(src))
    kind, args, out = convert_state_dict(sd, source_format, overrides, str(src))
    return atomic_save(native(kind, args, out, converted_from=source_format), dst)
