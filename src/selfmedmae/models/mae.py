"""Masked autoencoder on a ViT encoder, for 2D images and 3D volumes (He et al. 2022; Zhou et al. 2023).

``forward`` is three named steps: the encoder sees the visible patches only, a light decoder fills in
mask tokens with its own fixed position table, and the loss is the MSE on masked patches against
per-patch normalised targets (``norm_pix_loss``). Key names follow the original MAE
(``mask_token``, ``decoder_embed``, ``decoder_pos_embed``, ``decoder_blocks``, ``decoder_norm``,
``decoder_pred``) with the encoder under ``encoder.``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from selfmedmae.models.layers import Block, init_weights, layer_norm
from selfmedmae.models.masking import gather_tokens, random_masking
from selfmedmae.models.patchify import patchify, unpatchify
from selfmedmae.models.pos_embed import sincos_pos_embed, with_cls_row
from selfmedmae.models.vit import ViT


def normalize_patches(patches: torch.Tensor, unbiased: bool, eps: float = 1e-6) -> torch.Tensor:
    """Per-patch normalisation of the targets: (x - mean) / sqrt(var + eps) over each patch vector.

    One pass for both moments (``var_mean``) and a multiply by the reciprocal square root, on [B, L, 1]
    statistics: about half the time of mean, var, subtract, divide on a [B, L, P] tensor; equal to
    float32 rounding."""
    var, mean = torch.var_mean(patches, dim=-1, keepdim=True, correction=int(unbiased))  # [B, L, 1]
    return (patches - mean) * torch.rsqrt(var + eps)


class MAE(nn.Module):
    def __init__(self, encoder: ViT, decoder_embed_dim: int = 384, decoder_depth: int = 8,
                 decoder_num_heads: int = 12, mask_ratio: float = 0.75, norm_pix_loss: bool = True,
                 norm_pix_unbiased: bool = False, mlp_ratio: float = 4.0):
        super().__init__()
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.norm_pix_loss, self.norm_pix_unbiased = norm_pix_loss, norm_pix_unbiased
        self.patch_dim = encoder.in_chans * math.prod(encoder.patch_size)

        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.register_buffer("decoder_pos_embed",
                             with_cls_row(sincos_pos_embed(decoder_embed_dim, encoder.grid)))
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio) for _ in range(decoder_depth))
        self.decoder_norm = layer_norm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, self.patch_dim)

        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            module.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, *S] -> [B, L, P]
        return patchify(x, self.encoder.patch_size)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:  # [B, L, P] -> [B, C, *S]
        return unpatchify(patches, self.encoder.patch_size, self.encoder.grid, self.encoder.in_chans)

    def forward_encoder(self, patches: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        pos = enc.pos_embed  # [1, 1 + L, D]
        x = enc.patch_embed.embed_patches(gather_tokens(patches, ids_keep))  # [B, n_vis, D]
        x = x + gather_tokens(pos[:, 1:].expand(x.shape[0], -1, -1), ids_keep)
        cls = (enc.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        return enc.forward_blocks(torch.cat([cls, x], dim=1))[0]  # [B, 1 + n_vis, D]

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(latent)  # [B, 1 + n_vis, Dd]
        B, L = ids_restore.shape
        masks = self.mask_token.to(x.dtype).expand(B, L + 1 - x.shape[1], -1)
        tokens = gather_tokens(torch.cat([x[:, 1:], masks], dim=1), ids_restore)  # [B, L, Dd] unshuffled
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]  # [B, L, P]

    def target(self, patches: torch.Tensor) -> torch.Tensor:
        patches = patches.float()
        return normalize_patches(patches, self.norm_pix_unbiased) if self.norm_pix_loss else patches

    def forward_loss(self, patches: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # in float32 whatever the autocast dtype: the official fp16 run diverged to NaN (issue #9)
        per_patch = ((pred.float() - self.target(patches)) ** 2).mean(dim=-1)  # [B, L]
        return (per_patch * mask).sum() / mask.sum()  # masked patches only

    def forward(self, x: torch.Tensor, noise: Optional[torch.Tensor] = None,
                mask_ratio: Optional[float] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, C, *S] -> (loss, pred [B, L, P] normalised-patch predictions, mask [B, L] 1 = masked)."""
        patches = self.patchify(x)  # [B, L, P]
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        m = random_masking(x.shape[0], patches.shape[1], ratio, noise, device=x.device)
        latent = self.forward_encoder(patches, m.ids_keep)
        pred = self.forward_decoder(latent, m.ids_restore)
        return self.forward_loss(patches, pred, m.mask), pred, m.mask

    def reconstruct(self, x: torch.Tensor, pred: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """Predictions back in image units, [B, L, P]: de-normalised with each patch's own mean and
        unbiased std + eps (the official visualisation; stats of masked patches are used for display)."""
        if not self.norm_pix_loss:
            return pred.float()
        patches = self.patchify(x).float()
        mean = patches.mean(dim=-1, keepdim=True)
        std = patches.std(dim=-1, keepdim=True, unbiased=True)
        return pred.float() * (std + eps) + mean

    @torch.no_grad()
    def visualize(self, x: torch.Tensor, noise: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """Images [B, C, *S] for the paper's Fig. 2: original, masked, reconstruction, and the
        reconstruction of masked patches pasted into the visible ones."""
        _, pred, mask = self(x, noise)
        recon = self.reconstruct(x, pred)  # [B, L, P]
        patches = self.patchify(x).float()
        keep = (1 - mask).unsqueeze(-1)  # [B, L, 1]
        return {
            "original": x.float(),
            "masked": self.unpatchify(patches * keep),
            "reconstruction": self.unpatchify(recon),
            "paste": self.unpatchify(patches * keep + recon * (1 - keep)),
            "mask": mask,
        }
