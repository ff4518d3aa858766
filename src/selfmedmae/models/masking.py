"""Random patch masking of the MAE, reproducible from a given noise tensor.

``ids_shuffle = argsort(noise)`` ascending, the first ``int(L * (1 - mask_ratio))`` tokens are kept: the
rule of both references (official SelfMedMAE and the original MAE), so a given ``noise`` gives their mask.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch


class Masking(NamedTuple):
    ids_keep: torch.Tensor  # [B, n_keep] indices of the visible tokens
    ids_restore: torch.Tensor  # [B, L] inverse permutation of the shuffle
    mask: torch.Tensor  # [B, L] 0 = visible, 1 = masked, in the original token order


def num_visible(length: int, mask_ratio: float) -> int:
    return int(length * (1 - mask_ratio))


def random_masking(batch: int, length: int, mask_ratio: float, noise: Optional[torch.Tensor] = None,
                   device: Optional[torch.device] = None) -> Masking:
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    if noise is None:
        noise = torch.rand(batch, length, device=device)
    elif noise.shape != (batch, length):
        raise ValueError(f"noise must have shape {(batch, length)}, got {tuple(noise.shape)}")
    n_keep = num_visible(length, mask_ratio)
    ids_shuffle = torch.argsort(noise, dim=1)  # [B, L] ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, length, device=noise.device)
    mask[:, :n_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return Masking(ids_shuffle[:, :n_keep], ids_restore, mask)


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x [B, L, D], ids [B, N] -> [B, N, D]."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
