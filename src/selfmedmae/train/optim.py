"""AdamW parameter groups: weight decay except on norms, biases, tokens and position embeddings, and
layer-wise lr decay over the ViT blocks (BEiT / MAE fine-tuning; official ``LayerDecayValueAssigner``).

Layer ids for an encoder of depth N: 0 for ``cls_token``, ``pos_embed``, ``patch_embed.*``; i + 1 for
``blocks.i.*``; N + 1 for everything else (final norm, heads, the UNETR decoder, the MAE decoder).
A group's lr is scaled by ``layer_decay ** (N + 1 - id)``.
"""
from __future__ import annotations

import re
from typing import Iterable

import torch
from torch import nn

NO_DECAY_NAMES = ("cls_token", "pos_embed", "mask_token", "decoder_pos_embed")


def decays(name: str, param: torch.Tensor) -> bool:
    """False for norms and biases (1-D), class/mask tokens and position tables."""
    return not (param.ndim <= 1 or name.endswith(".bias") or name.split(".")[-1] in NO_DECAY_NAMES)


def layer_id(name: str, depth: int, prefix: str = "encoder.") -> int:
    if not name.startswith(prefix):
        return depth + 1
    rest = name[len(prefix):]
    if rest in ("cls_token", "pos_embed") or rest.startswith("patch_embed."):
        return 0
    match = re.match(r"blocks\.(\d+)\.", rest)
    return int(match.group(1)) + 1 if match else depth + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0,
                 depth: int | None = None) -> list[dict]:
    """Groups for ``torch.optim.AdamW``; each carries ``lr_scale`` (applied by the schedule)."""
    if depth is None:
        depth = model.encoder.depth  # type: ignore[attr-defined]
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lid, decay = layer_id(name, depth), decays(name, param)
        group = groups.setdefault((lid, decay), {
            "name": f"layer_{lid}_{'decay' if decay else 'no_decay'}", "params": [], "param_names": [],
            "weight_decay": weight_decay if decay else 0.0, "lr_scale": layer_decay ** (depth + 1 - lid)})
        group["params"].append(param)
        group["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: Iterable[float],
                    layer_decay: float = 1.0) -> torch.optim.AdamW:
    groups = param_groups(model, weight_decay, layer_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))  # type: ignore[arg-type]
