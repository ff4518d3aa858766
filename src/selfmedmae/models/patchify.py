"""Images <-> patch vectors, for any number of spatial dimensions.

A patch vector is ordered (p_1, ..., p_n, C): channel last, as both references do (the official 3D MAE
and the original 2D MAE). Tokens are ordered with the last spatial axis varying fastest, which is the
order of a strided convolution's output flattened, so ``patchify`` and ``PatchEmbed`` agree token by token.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


def grid_size(img_size: Sequence[int], patch_size: Sequence[int]) -> tuple[int, ...]:
    for s, p in zip(img_size, patch_size):
        if s % p:
            raise ValueError(f"image size {tuple(img_size)} is not divisible by patch size {tuple(patch_size)}")
    return tuple(s // p for s, p in zip(img_size, patch_size))


def patchify(x: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """[B, C, *S] -> [B, L, prod(patch) * C]."""
    B, C, *S = x.shape
    n = len(S)
    grid = grid_size(S, patch_size)
    shape = [B, C]
    for g, p in zip(grid, patch_size):
        shape += [g, p]
    x = x.reshape(shape)  # [B, C, g1, p1, ..., gn, pn]
    order = [0] + [2 + 2 * i for i in range(n)] + [3 + 2 * i for i in range(n)] + [1]
    return x.permute(order).reshape(B, -1, C * math.prod(patch_size))


def unpatchify(patches: torch.Tensor, patch_size: Sequence[int], grid: Sequence[int],
               channels: int) -> torch.Tensor:
    """[B, L, prod(patch) * C] -> [B, C, *S]; the inverse of :func:`patchify`."""
    B = patches.shape[0]
    n = len(grid)
    x = patches.reshape([B, *grid, *patch_size, channels])  # [B, g1..gn, p1..pn, C]
    order = [0, 2 * n + 1]
    for i in range(n):
        order += [1 + i, 1 + n + i]
    x = x.permute(order)  # [B, C, g1, p1, ..., gn, pn]
    return x.reshape([B, channels] + [g * p for g, p in zip(grid, patch_size)])
