"""Patch embedding: a convolution with kernel = stride = patch size, for 2D or 3D inputs.

``forward`` applies the convolution to the image, as timm and the official UNETR do. ``embed_patches``
applies the same weights to patch vectors already cut by :func:`~selfmedmae.models.patchify.patchify`,
which lets the MAE embed only the visible patches (the official MAE3D does the same).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: Sequence[int], in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.in_chans = in_chans
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[len(self.patch_size)]
        self.proj = conv(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, *S] -> [B, L, D]
        return self.proj(x).flatten(2).transpose(1, 2)

    def embed_patches(self, patches: torch.Tensor) -> torch.Tensor:  # [B, N, prod(p) * C] -> [B, N, D]
        # conv weight [D, C, p1..pn] -> [D, p1..pn, C] to match the channel-last patch vector
        w = self.proj.weight.movedim(1, -1).reshape(self.proj.out_channels, -1)
        return F.linear(patches, w, self.proj.bias)

    def reset_parameters(self) -> None:
        """MAE init: xavier-uniform on the weight viewed as [D, C * prod(p)]."""
        w = self.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.proj.bias)
