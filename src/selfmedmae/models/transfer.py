"""Weight transfer into a fine-tuning model's encoder: MAE -> UNETR / classifier, and 2D -> 3D inflation.

The MAE -> UNETR rule is the official one: the ``encoder.*`` weights are loaded, the MAE's fixed sin-cos
table becomes the initial value of the learnable position embedding (its class-token row is zero), and
the MAE decoder is dropped. Where the grids differ the table is interpolated. A 2D ViT (an ImageNet or
original-MAE checkpoint with timm key names) can start a 3D encoder: its patch kernel is summed over the
input channels when the channel counts differ and spread evenly over the new axis, so that a volume
constant along that axis gives the 2D response; its position table cannot be mapped and is left as is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from selfmedmae.errors import UserError
from selfmedmae.models.pos_embed import resize_pos_embed
from selfmedmae.models.vit import ViT


@dataclass
class TransferReport:
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # source keys not used, with the reason
    kept: list[str] = field(default_factory=list)  # target keys left at their initial value

    def summary(self) -> str:
        return (f"loaded {len(self.loaded)} encoder tensors; kept initial values for "
                f"{len(self.kept)} ({', '.join(self.kept) or 'none'}); skipped {len(self.skipped)} source keys")


def encoder_state(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder part of a native state dict (MAE, classifier, UNETR or a bare ViT)."""
    enc = {k[len("encoder."):]: v for k, v in state_dict.items() if k.startswith("encoder.")}
    return enc or dict(state_dict)


def load_encoder(encoder: ViT, source: Mapping[str, torch.Tensor], source_grid: Sequence[int],
                 source_name: str) -> TransferReport:
    """Copy a source encoder's weights into ``encoder`` (in place); shapes must match except the grid."""
    own = encoder.state_dict()
    report, new = TransferReport(), {}
    for key, value in source.items():
        if key not in own:
            report.skipped.append(f"{key} (not in the target encoder)")
            continue
        if key == "pos_embed" and value.shape != own[key].shape:
            if value.shape[-1] != own[key].shape[-1]:
                raise UserError(f"{source_name}: pos_embed width {value.shape[-1]} != {own[key].shape[-1]}")
            value = resize_pos_embed(value, source_grid, encoder.grid)
        if value.shape != own[key].shape:
            raise UserError(f"{source_name}: {key} has shape {tuple(value.shape)}, the model needs "
                            f"{tuple(own[key].shape)} (different in_chans, patch_size or embed_dim?)")
        new[key] = value
        report.loaded.append(key)
    report.kept = [k for k in own if k not in new]
    if any(k.startswith("blocks.") for k in report.kept):
        raise UserError(f"{source_name}: the source lacks encoder blocks the model has: "
                        f"{', '.join(k for k in report.kept if k.startswith('blocks.'))[:300]}")
    encoder.load_state_dict({**own, **new})
    return report


def transfer_from_native(model: nn.Module, ckpt: dict, source_name: str) -> TransferReport:
    """Initialise ``model.encoder`` from a native checkpoint of any kind (MAE, ViT, classifier, UNETR)."""
    enc_args = ckpt["model_args"]["encoder"]
    grid = [s // p for s, p in zip(enc_args["img_size"], _as_list(enc_args["patch_size"], enc_args["img_size"]))]
    return load_encoder(model.encoder, encoder_state(ckpt["state_dict"]), grid, source_name)


def _as_list(patch: int | Sequence[int], img_size: Sequence[int]) -> list[int]:
    return [patch] * len(img_size) if isinstance(patch, int) else list(patch)


def inflate_patch_kernel(weight: torch.Tensor, in_chans: int, new_axis: int) -> torch.Tensor:
    """[D, C2, p, p] -> [D, in_chans, p, p, new_axis]: channels summed if they differ, depth spread."""
    if weight.shape[1] != in_chans:
        weight = weight.sum(dim=1, keepdim=True).expand(-1, in_chans, -1, -1) / in_chans
    return weight.unsqueeze(-1).expand(*weight.shape, new_axis) / new_axis


def inflate_2d_into_3d(encoder: ViT, state_2d: Mapping[str, torch.Tensor], source_name: str) -> TransferReport:
    """Start a 3D encoder from a 2D ViT with timm keys (the paper's 'ImageNet' baseline)."""
    if encoder.spatial_dims != 3:
        raise UserError(f"{source_name}: inflation needs a 3D target encoder")
    src = dict(encoder_state(state_2d))
    w = src.get("patch_embed.proj.weight")
    if w is None or w.ndim != 4:
        raise UserError(f"{source_name}: no 2D patch_embed.proj.weight to inflate")
    if tuple(w.shape[2:]) != tuple(encoder.patch_size[:2]):
        raise UserError(f"{source_name}: 2D patch {tuple(w.shape[2:])} does not match {encoder.patch_size[:2]}")
    src["patch_embed.proj.weight"] = inflate_patch_kernel(w, encoder.in_chans, encoder.patch_size[2])
    pos = src.pop("pos_embed", None)
    src = {k: v for k, v in src.items() if not k.startswith(("head.", "fc_norm."))}
    if pos is not None:
        src["cls_token"] = src["cls_token"] + pos[:, :1]  # the class token's position row folds into it
    report = load_encoder(encoder, src, encoder.grid, source_name)
    report.skipped.append("pos_embed (a 2D table has no 3D counterpart; the sin-cos start is kept)")
    return report


def load_2d_vit(encoder: ViT, state_dict: Mapping[str, torch.Tensor], source_name: str) -> TransferReport:
    """A 2D ViT with timm names (ImageNet, original MAE) into ``encoder``: as is into a 2D encoder,
    inflated (:func:`inflate_2d_into_3d`) into a 3D one. Heads and MAE decoders are left out."""
    sd = {k: v for k, v in state_dict.items() if not k.startswith(("head.", "fc_norm.", "decoder", "mask_token"))}
    if encoder.spatial_dims == 3:
        return inflate_2d_into_3d(encoder, sd, source_name)
    state = encoder_state(sd)
    rows = state["pos_embed"].shape[1] - 1 if "pos_embed" in state else 0
    side = round(rows ** 0.5)
    return load_encoder(encoder, state, [side, side], source_name)
