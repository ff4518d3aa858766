"""AdamW parameter groups: weight decay except on norms, biases, tokens and position embeddings, and
layer-wise lr decay over the ViT blocks (BEiT / MAE fine-tuning; official ``LayerDecayValueAssigner``).

Layer ids for an encoder of depth N: 0 for ``cls_token``, ``pos_embed``, ``patch_embed.*``; i + 1 for
``blocks.i.*``; N + 1 for everything else (final norm, heads, the UNETR decoder, the MAE decoder).
A group's lr is scaled by ``layer_decay ** (N + 1 - id)``.

The update runs as one fused kernel (``fused=True``) where torch has it for the parameters' device: on a
2-core CPU torch's default per-tensor loop took 2.3-4.9x as long as the fused kernel for ViT-B's 104 M
parameters (benchmarks/RESULTS.md). The fused kernel does the same arithmetic in another
order, so the weights agree with the loop's to float32 rounding, not bit for bit.
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


IMPLS = ("auto", "fused", "foreach", "loop")
FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu")  # where torch's fused AdamW kernel exists


def impl_kwargs(params: Iterable[torch.Tensor], impl: str = "auto") -> dict:
    """AdamW keyword arguments for ``impl``: ``auto`` is ``fused`` when every parameter is a floating-point
    tensor on a device with the fused kernel, else torch's own default."""
    if impl not in IMPLS:
        raise ValueError(f"AdamW implementation {impl!r} is not one of {', '.join(IMPLS)}")
    if impl == "auto":
        params = list(params)
        ok = bool(params) and all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in params)
        return {"fused": True} if ok else {}
    return {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}[impl]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: Iterable[float],
                    layer_decay: float = 1.0, impl: str = "auto") -> torch.optim.AdamW:
    groups = param_groups(model, weight_decay, layer_decay)
    kwargs = impl_kwargs((p for g in groups for p in g["params"]), impl)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), **kwargs)  # type: ignore[arg-type]
