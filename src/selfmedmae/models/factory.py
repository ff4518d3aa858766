"""Build models from plain argument dicts, which native checkpoints store next to the weights.

``model_args`` turns a run config into ``{"encoder": {...ViT args...}, ...head args...}``; ``build_model``
turns a kind (``vit``, ``mae``, ``classifier``, ``unetr``) and such a dict into a model. The ``unetr`` kind
is every 3D segmenter on the ViT: its ``decoder`` field picks UNETR's decoder or the Primus-style one
(:mod:`selfmedmae.models.primus`); checkpoints written before the field existed build UNETR.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from selfmedmae.models.classifier import ViTClassifier
from selfmedmae.models.mae import MAE
from selfmedmae.models.presets import decoder_sizes, sizes
from selfmedmae.models.unetr import UNETR
from selfmedmae.models.vit import ViT

KINDS = ("vit", "mae", "classifier", "unetr")
HEAD_KINDS = {"segmentation": "unetr", "classification": "classifier"}  # the fine-tuned model kind of each task
SLIDING_WINDOW_KINDS = ("unetr",)  # kinds inferred window by window over a whole volume
DECODERS = ("unetr", "primus")  # the unetr kind's segmentation decoders (model.decoder)
MAE_ARGS = ("decoder_embed_dim", "decoder_depth", "decoder_num_heads", "mask_ratio", "norm_pix_loss",
            "norm_pix_unbiased")


def build_model(kind: str, args: dict[str, Any]) -> nn.Module:
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    enc = dict(args["encoder"])
    if kind == "mae":
        enc["pos_embed"] = "sincos"
        mae_args = {k: args[k] for k in MAE_ARGS if k in args}
        return MAE(ViT(**enc), mlp_ratio=enc.get("mlp_ratio", 4.0), **mae_args)
    if kind == "vit":
        return ViT(**enc)
    if kind == "classifier":
        pool = args.get("global_pool", False)
        return ViTClassifier(ViT(**enc, final_norm=not pool), args["num_classes"], pool)
    return segmenter(ViT(**enc), args)


def segmenter(encoder: ViT, args: dict[str, Any]) -> nn.Module:
    """The ``unetr`` kind: UNETR, or the Primus-style decoder when ``args["decoder"] == "primus"``."""
    decoder = args.get("decoder", "unetr")  # absent in checkpoints written before the choice existed
    channels_last = bool(args.get("channels_last", False))
    if decoder == "primus":
        from selfmedmae.models.primus import PrimusSegmenter  # imported only by the runs that use it

        return PrimusSegmenter(encoder, args["num_classes"], args.get("feature_size", 16), channels_last)
    if decoder != "unetr":
        raise ValueError(f"unknown decoder {decoder!r}; expected one of {', '.join(DECODERS)}")
    return UNETR(encoder, args["num_classes"], args.get("feature_size", 16), args.get("skip_blocks"),
                 channels_last=channels_last, deep_supervision=bool(args.get("deep_supervision", False)))


def encoder_args(model_cfg: Any, img_size: list[int], in_chans: int, pos_embed: str) -> dict[str, Any]:
    return dict(img_size=[int(s) for s in img_size], patch_size=int(model_cfg.patch_size),
                in_chans=int(in_chans), mlp_ratio=float(model_cfg.mlp_ratio), qkv_bias=bool(model_cfg.qkv_bias),
                drop_path_rate=float(model_cfg.drop_path_rate), pos_embed=pos_embed, **sizes(model_cfg))


def model_args(kind: str, model_cfg: Any, img_size: list[int], in_chans: int,
               num_classes: int | None = None) -> dict[str, Any]:
    """The argument dict of ``build_model`` from the ``model`` section of a run config."""
    args: dict[str, Any] = {"encoder": encoder_args(model_cfg, img_size, in_chans,
                                                    "sincos" if kind == "mae" else "learnable")}
    if kind == "mae":
        args["encoder"]["drop_path_rate"] = 0.0  # no stochastic depth in pre-training (official)
        args.update({k: getattr(model_cfg, k) for k in MAE_ARGS})
        args.update(decoder_sizes(model_cfg))  # the preset's decoder where the config leaves it null
    elif kind == "classifier":
        args.update(num_classes=int(num_classes), global_pool=bool(model_cfg.global_pool))
    elif kind == "unetr":
        skips = model_cfg.skip_blocks
        args.update(num_classes=int(num_classes), decoder=str(model_cfg.decoder),
                    feature_size=int(model_cfg.feature_size),
                    skip_blocks=None if skips is None else [int(s) for s in skips],
                    channels_last=bool(model_cfg.channels_last),
                    deep_supervision=bool(model_cfg.deep_supervision))
    return args
