"""Fixed sin-cos position embeddings for any number of axes, and resizing of position tables.

For a grid of n axes the embedding dimension D is split into 2n equal parts,
``[sin(a1 w), cos(a1 w), ..., sin(an w), cos(an w)]`` with ``w_k = 1 / 10000^(k / (D / 2n))``, axes in
token order (slowest first). In 3D this is exactly the official SelfMedMAE table. (The original 2D MAE
puts the fast axis first; an imported table is kept as it is, so that does not matter for parity.)
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F


def sincos_pos_embed(embed_dim: int, grid: Sequence[int], temperature: float = 10000.0) -> torch.Tensor:
    """[prod(grid), embed_dim] float32 table, rows in token order (last axis fastest)."""
    n = len(grid)
    pos_dim = embed_dim // (2 * n)  # when D is not divisible by 2n (ViT-L 1024 in 3D) the rest is zero
    omega = 1.0 / temperature ** (torch.arange(pos_dim, dtype=torch.float64) / pos_dim)  # [pos_dim]
    coords = torch.meshgrid(*[torch.arange(g, dtype=torch.float64) for g in grid], indexing="ij")
    parts = []
    for c in coords:
        angle = c.reshape(-1, 1) * omega  # [L, pos_dim]
        parts += [torch.sin(angle), torch.cos(angle)]
    table = torch.cat(parts, dim=1)
    pad = embed_dim - table.shape[1]
    return torch.cat([table, table.new_zeros(table.shape[0], pad)], dim=1).float() if pad else table.float()


def with_cls_row(table: torch.Tensor) -> torch.Tensor:
    """[L, D] -> [1, 1 + L, D] with a zero row for the class token."""
    return torch.cat([table.new_zeros(1, table.shape[-1]), table], dim=0).unsqueeze(0)


def resize_pos_embed(pos_embed: torch.Tensor, old_grid: Sequence[int], new_grid: Sequence[int],
                     num_prefix: int = 1) -> torch.Tensor:
    """Interpolate a [1, num_prefix + L_old, D] table to a new grid (bicubic in 2D, trilinear in 3D)."""
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if old_grid == new_grid:
        return pos_embed
    prefix, grid_part = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    D = pos_embed.shape[-1]
    if grid_part.shape[1] != math.prod(old_grid):
        raise ValueError(f"position table has {grid_part.shape[1]} rows, grid {old_grid} needs "
                         f"{math.prod(old_grid)}")
    x = grid_part.reshape(1, *old_grid, D).movedim(-1, 1).float()  # [1, D, *old_grid]
    mode = {1: "linear", 2: "bicubic", 3: "trilinear"}[len(old_grid)]
    x = F.interpolate(x, size=new_grid, mode=mode, align_corners=False)
    x = x.movedim(1, -1).reshape(1, -1, D).to(pos_embed.dtype)
    return torch.cat([prefix, x], dim=1)
