"""Vision Transformer encoder for 2D images and 3D volumes, with timm's parameter names.

One class for every spatial dimension: ``len(patch_size)`` picks Conv2d or Conv3d and the position grid.
Keys: ``patch_embed.proj``, ``cls_token``, ``pos_embed`` [1, 1 + L, D] (row 0 for the class token),
``blocks.{i}.*``, ``norm``. The position table is a fixed sin-cos buffer for MAE pre-training
(``pos_embed="sincos"``) or a learnable parameter initialised from the same sin-cos values for
fine-tuning (``pos_embed="learnable"``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from selfmedmae.models.layers import Block, init_weights, layer_norm
from selfmedmae.models.patch_embed import PatchEmbed
from selfmedmae.models.patchify import grid_size
from selfmedmae.models.pos_embed import resize_pos_embed, sincos_pos_embed, with_cls_row


def _tuple(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    return (value,) * n if isinstance(value, int) else tuple(int(v) for v in value)


class ViT(nn.Module):
    """ViT encoder. ``forward_features`` returns the normed tokens and the outputs of chosen blocks."""

    def __init__(self, img_size: Sequence[int], patch_size: int | Sequence[int] = 16, in_chans: int = 1,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_path_rate: float = 0.0, pos_embed: str = "learnable",
                 final_norm: bool = True):
        super().__init__()
        if pos_embed not in ("sincos", "learnable"):
            raise ValueError(f"pos_embed must be 'sincos' or 'learnable', got {pos_embed!r}")
        self.img_size = tuple(int(s) for s in img_size)
        self.spatial_dims = len(self.img_size)
        self.patch_size = _tuple(patch_size, self.spatial_dims)
        self.grid = grid_size(self.img_size, self.patch_size)
        self.in_chans, self.embed_dim, self.depth = in_chans, embed_dim, depth

        self.patch_embed = PatchEmbed(self.patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        table = with_cls_row(sincos_pos_embed(embed_dim, self.grid))  # [1, 1 + L, D]
        if pos_embed == "sincos":
            self.register_buffer("pos_embed", table)
        else:
            self.pos_embed = nn.Parameter(table)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth grows linearly
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_path=r) for r in rates)
        self.norm = layer_norm(embed_dim) if final_norm else nn.Identity()

        self.apply(init_weights)
        self.patch_embed.reset_parameters()
        nn.init.normal_(self.cls_token, std=0.02)

    @property
    def num_patches(self) -> int:
        return len(self.pos_embed[0]) - 1

    def pos_embed_for(self, grid: Sequence[int]) -> torch.Tensor:
        """The position table for another grid (interpolated), e.g. for inputs of another size."""
        return resize_pos_embed(self.pos_embed, self.grid, grid)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image [B, C, *S] -> tokens with class token and positions, [B, 1 + L, D]."""
        grid = grid_size(x.shape[2:], self.patch_size)
        pos = self.pos_embed if grid == self.grid else self.pos_embed_for(grid)
        x = self.patch_embed(x) + pos[:, 1:]  # [B, L, D]
        cls = (self.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1)

    def forward_blocks(self, x: torch.Tensor, return_blocks: Sequence[int] = ()
                       ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the blocks on tokens [B, N, D]; return the normed output and the raw outputs of the
        blocks listed in ``return_blocks`` (0-based indices, in the order given)."""
        bad = [b for b in return_blocks if not 0 <= b < self.depth]
        if bad:
            raise ValueError(f"return_blocks {bad} outside 0..{self.depth - 1}")
        wanted, outputs = set(return_blocks), {}
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in wanted:
                outputs[index] = x
        taps = [outputs[b] for b in return_blocks]
        return self.norm(x), taps

    def forward_features(self, x: torch.Tensor, return_blocks: Sequence[int] = ()
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.forward_blocks(self.embed(x), return_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, *S] -> [B, 1 + L, D]
        return self.forward_features(x)[0]
