"""Where fine-tuning starts (``init``): ``scratch``, ``mae:PATH`` (a native MAE / encoder / any native
checkpoint), ``official:PATH`` (a checkpoint of the official SelfMedMAE MAE3D), ``imagenet:PATH`` (a local
2D ViT with timm keys, e.g. ImageNet or original-MAE weights; inflated for 3D). Nothing is downloaded."""
from __future__ import annotations

from torch import nn

from selfmedmae.errors import UserError
from selfmedmae.models.checkpoint import read_checkpoint, read_native
from selfmedmae.models.convert import official_mae3d_state, unwrap_state_dict
from selfmedmae.models.transfer import TransferReport, encoder_state, load_2d_vit, load_encoder

KINDS = ("scratch", "mae", "native", "official", "imagenet")


def initialise(model: nn.Module, init: str) -> TransferReport | None:
    """Load the encoder weights named by ``init`` into ``model.encoder`` (in place)."""
    kind, _, path = init.partition(":")
    if kind not in KINDS or (kind != "scratch" and not path):
        raise UserError(f"init: {init!r} must be scratch, mae:PATH, official:PATH or imagenet:PATH")
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
