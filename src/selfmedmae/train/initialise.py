"""Where fine-tuning starts (``init``): ``scratch``, ``mae:PATH`` (a native MAE / encoder / any native
checkpoint), ``official:PATH`` (a checkpoint of the official SelfMedMAE MAE3D), ``imagenet:PATH`` (a local
2D ViT with timm keys, e.g. ImageNet or original-MAE weights; inflated for 3D). Nothing is downloaded."""
from __future__ import annotations

from torch import nn

from selfmedmae.errors import UserError
from selfmedmae.models.checkpoint import read_checkpoint, read_native
from selfmedmae.models.convert import unwrap_state_dict
from selfmedmae.models.pos_embed import with_cls_row
from selfmedmae.models.transfer import TransferReport, encoder_state, inflate_2d_into_3d, load_encoder

KINDS = ("scratch", "mae", "native", "official", "imagenet")


def _official_encoder(path: str) -> tuple[dict, list[int]]:
    sd = unwrap_state_dict(read_checkpoint(path))
    if "encoder_pos_embed" not in sd:
        raise UserError(f"{path}: no encoder_pos_embed: not a checkpoint of the official MAE3D")
    enc = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.") and ".head." not in k}
    enc["pos_embed"] = with_cls_row(sd["encoder_pos_embed"][0])  # the official transfer rule
    tokens = sd["encoder_pos_embed"].shape[1]
    side = round(tokens ** (1 / 3))
    return enc, [side] * 3


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
    if kind == "official":
        enc, grid = _official_encoder(path)
        return load_encoder(encoder, enc, grid, path)
    sd = unwrap_state_dict(read_checkpoint(path))  # imagenet: timm names, maybe under 'model'
    sd = {k: v for k, v in sd.items() if not k.startswith(("head.", "fc_norm.", "decoder", "mask_token"))}
    if encoder.spatial_dims == 3:
        return inflate_2d_into_3d(encoder, sd, path)
    state = encoder_state(sd)
    rows = state["pos_embed"].shape[1] - 1 if "pos_embed" in state else 0
    side = round(rows ** 0.5)
    return load_encoder(encoder, state, [side, side], path)
