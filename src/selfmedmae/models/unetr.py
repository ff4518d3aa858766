"""UNETR (Hatamizadeh et al. 2022) on a ViT encoder, for any power-of-two patch size.

The decoder is built from MONAI's UNETR blocks, with MONAI's key names (``decoder.encoder1..``,
``decoder.decoder2..``, ``decoder.out``); its 1 x 1 convolutions and 2 x upsampling run as matrix
multiplies (:mod:`selfmedmae.models.pointwise`). With a patch of 2^k voxels the decoder has k upsampling
stages; the skip connections come from k - 1 encoder blocks, evenly spaced: block ``i * depth // k`` (0-based) for
i = 1..k-1. For the paper's 16^3 patches and 12 blocks this is blocks 3, 6, 9 (the outputs of blocks 4, 7
and 10 counted from 1), as the official code and MONAI. Patch 8 (k = 3) taps blocks 4 and 8, like the
official code's unused x8 variant; the official decoder itself works with 16 only.

Deep supervision (``deep_supervision=True``, training only): 1 x 1 heads (``decoder.aux.*``) on the outputs
of the decoder stages at 1/2, 1/4, ... of the input's resolution, as nnU-Net v2 supervises its decoder: of
the k decoder outputs, the coarsest (1/2^(k-1)) gets weight 0 in nnU-Net's loss and is not given a head
here, so patch 16 has heads at 1/2 and 1/4, patch 8 at 1/2. In training mode the model then returns the
list [full resolution, 1/2, 1/4, ...]; in eval mode only the full-resolution logits.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from torch import nn

from selfmedmae.models.pointwise import use_matmul_convolutions
from selfmedmae.models.vit import ViT


def default_skip_blocks(depth: int, stages: int) -> list[int]:
    return [i * depth // stages for i in range(1, stages)]


class UNETRDecoder(nn.Module):
    def __init__(self, spatial_dims: int, in_chans: int, hidden: int, stages: int, feature_size: int,
                 num_classes: int, norm_name: str = "instance", deep_supervision: bool = False):
        super().__init__()
        self.stages = stages
        f, k = feature_size, stages
        self.encoder1 = UnetrBasicBlock(spatial_dims, in_chans, f, kernel_size=3, stride=1,
                                        norm_name=norm_name, res_block=True)
        for j in range(2, k + 1):  # encoder j: from tap j-2, upsampled to 2^(k-j+1) x the grid
            setattr(self, f"encoder{j}", UnetrPrUpBlock(
                spatial_dims, hidden, f * 2 ** (j - 1), num_layer=k - j, kernel_size=3, stride=1,
                upsample_kernel_size=2, norm_name=norm_name, conv_block=True, res_block=True))
        for j in range(k + 1, 1, -1):  # decoder j joins encoder j-1
            in_ch = hidden if j == k + 1 else f * 2 ** (j - 1)
            setattr(self, f"decoder{j}", UnetrUpBlock(
                spatial_dims, in_ch, f * 2 ** (j - 2), kernel_size=3, upsample_kernel_size=2,
                norm_name=norm_name, res_block=True))
        self.out = UnetOutBlock(spatial_dims, f, num_classes)
        if deep_supervision:  # aux.i reads decoder{i + 3}: 1/2^(i + 1) of the input's resolution
            self.aux = nn.ModuleList(UnetOutBlock(spatial_dims, f * 2 ** (j - 2), num_classes)
                                     for j in range(3, k + 1))
        use_matmul_convolutions(self)  # 1x1 convolutions and 2x upsampling as matmuls: same weights, faster

    def forward(self, image: torch.Tensor, final: torch.Tensor, taps: Sequence[torch.Tensor]
                ) -> torch.Tensor | list[torch.Tensor]:
        """image [B, C, *S]; final and taps are feature maps [B, D, *grid] (class token removed). Returns the
        logits [B, num_classes, *S], or with deep supervision in training [them, 1/2 resolution, 1/4, ...]."""
        skips = [self.encoder1(image)] + [getattr(self, f"encoder{j}")(t) for j, t in
                                          zip(range(2, self.stages + 1), taps)]
        supervise = self.training and hasattr(self, "aux")
        x, coarse = final, []
        for j in range(self.stages + 1, 1, -1):
            x = getattr(self, f"decoder{j}")(x, skips[j - 2])  # [B, f * 2^(j-2), *S / 2^(j-2)]
            if supervise and 3 <= j <= self.stages:
                coarse.insert(0, self.aux[j - 3](x))  # [B, num_classes, *S / 2^(j-2)]
        out = self.out(x)  # [B, num_classes, *S]
        return [out] + coarse if supervise else out


class UNETR(nn.Module):
    def __init__(self, encoder: ViT, num_classes: int, feature_size: int = 16,
                 skip_blocks: Optional[Sequence[int]] = None, norm_name: str = "instance",
                 channels_last: bool = False, deep_supervision: bool = False):
        super().__init__()
        p = encoder.patch_size
        if len(set(p)) != 1 or p[0] < 2 or 2 ** round(math.log2(p[0])) != p[0]:
            raise ValueError(f"UNETR needs an isotropic power-of-two patch size, got {p}")
        stages = round(math.log2(p[0]))
        self.encoder = encoder
        self.skip_blocks = list(skip_blocks) if skip_blocks is not None else default_skip_blocks(
            encoder.depth, stages)
        if len(self.skip_blocks) != stages - 1:
            raise ValueError(f"patch {p[0]} needs {stages - 1} skip blocks, got {self.skip_blocks}")
        self.decoder = UNETRDecoder(encoder.spatial_dims, encoder.in_chans, encoder.embed_dim, stages,
                                    feature_size, num_classes, norm_name, deep_supervision)
        # Channels-last convolutions (weights and inputs both): measured on a 2-core AVX2 CPU, training
        # steps of the demo's small decoder (feature_size 8, 32^3 crops) ran 1.35x faster, but a 96^3
        # window of the paper's decoder (feature_size 16) 1.35x slower; hence a choice, off by default.
        self.memory_format = torch.contiguous_format
        if channels_last:
            self.memory_format = torch.channels_last_3d if encoder.spatial_dims == 3 else torch.channels_last
            self.decoder.to(memory_format=self.memory_format)

    def _to_map(self, tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        # [B, 1 + L, D] -> [B, D, *grid]; tokens are in grid order with the last axis fastest
        x = tokens[:, 1:]
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:  # [B, C, *S] -> [B, K, *S]
        grid = [s // p for s, p in zip(x.shape[2:], self.encoder.patch_size)]
        x = x.contiguous(memory_format=self.memory_format)
        final, taps = self.encoder.forward_features(x, self.skip_blocks)
        return self.decoder(x, self._to_map(final, grid), [self._to_map(t, grid) for t in taps])
