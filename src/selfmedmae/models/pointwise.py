"""Convolutions that are matrix multiplies, run as matrix multiplies.

A 1 x 1 x 1 convolution maps every voxel's channels through one matrix, and a transposed convolution
whose kernel equals its stride (UNETR's 2 x 2 x 2 upsampling) maps every input voxel to its own block of
output voxels, again through one matrix. oneDNN runs both through its general convolution kernels,
which on a CPU reorder the tensors into blocked layouts and back: in UNETR's decoder at 96^3 they take
2.5-3x the time of the same work written as one ``matmul`` (2-core AVX2 CPU, fp32: 1 x 1 convolution
32 -> 16 channels on 4 windows 455 ms against 169 ms; 2 x 2 x 2 upsampling 32 -> 16 from 48^3 607 ms
against 341 ms). The modules here are the ``torch.nn`` ones (same parameters, same state-dict keys,
same results up to float rounding order) with that ``forward``; inputs they do not cover take the parent's.
:func:`use_matmul_convolutions` swaps them into a built model.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _pointwise(x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """``weight`` [out, in] applied to the channels of ``x`` [B, in, *S] -> [B, out, *S], keeping its layout."""
    if x.is_contiguous():  # one [out, in] @ [in, voxels] per item (matmul would fold in a transposed copy)
        batch = weight.expand(x.shape[0], *weight.shape)
        flat = x.flatten(2)
        y = torch.bmm(batch, flat) if bias is None else torch.baddbmm(bias[:, None], batch, flat)
        return y.view(x.shape[0], weight.shape[0], *x.shape[2:])
    # channels-last (or any layout with the channels fastest): one linear over the last axis
    return F.linear(x.movedim(1, -1), weight, bias).movedim(-1, 1)


def _is_pointwise(conv: nn.Module) -> bool:
    return (not isinstance(conv.padding, str) and set(conv.kernel_size) == {1} and set(conv.stride) == {1}
            and set(conv.padding) == {0} and conv.groups == 1 and conv.padding_mode == "zeros")


def _is_blockwise(conv: nn.Module) -> bool:
    return (tuple(conv.kernel_size) == tuple(conv.stride) and set(conv.padding) == {0}
            and set(conv.output_padding) == {0} and set(conv.dilation) == {1} and conv.groups == 1)


class _MatmulConv:
    """``forward`` of a 1 x 1 convolution as a matrix multiply (mixed into the ``nn.ConvNd`` classes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.weight.dim() or x.shape[1] != self.in_channels:
            return super().forward(x)  # unbatched or wrong input: the parent's checks and messages
        return _pointwise(x, self.weight.flatten(1), self.bias)


class _MatmulUpsample:
    """``forward`` of a transposed convolution with kernel = stride, as a matrix multiply + interleave."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if output_size is not None or x.dim() != self.weight.dim() or x.shape[1] != self.in_channels:
            return super().forward(x, output_size)
        b, grid, kernel, out = x.shape[0], tuple(x.shape[2:]), tuple(self.kernel_size), self.out_channels
        n, size = len(grid), [s * k for s, k in zip(grid, kernel)]
        weight = self.weight.flatten(1)  # [in, out * prod(kernel)], out-major
        if x.is_contiguous():  # [B, out, k0, k1, .., s0, s1, ..] -> [B, out, s0, k0, s1, k1, ..]
            y = _pointwise(x, weight.t(), None).view(b, out, *kernel, *grid)
            if self.bias is not None:
                y += self.bias.view(1, out, *[1] * (2 * n))
            order = [0, 1] + [axis for d in range(n) for axis in (2 + n + d, 2 + d)]
            return y.permute(order).reshape(b, out, *size)
        # channels fastest (channels-last): [B, s0, s1, .., out, k0, k1, ..] -> [B, s0, k0, s1, k1, .., out]
        y = F.linear(x.movedim(1, -1), weight.t()).view(b, *grid, out, *kernel)
        order = [0] + [axis for d in range(n) for axis in (1 + d, 2 + n + d)] + [1 + n]
        y = y.permute(order).reshape(b, *size, out)
        if self.bias is not None:
            y += self.bias
        return y.movedim(-1, 1)  # channels-last again


class MatmulConv1d(_MatmulConv, nn.Conv1d):
    """``nn.Conv1d`` with a 1-wide kernel, run as a matmul."""


class MatmulConv2d(_MatmulConv, nn.Conv2d):
    """``nn.Conv2d`` with a 1 x 1 kernel, run as a matmul."""


class MatmulConv3d(_MatmulConv, nn.Conv3d):
    """``nn.Conv3d`` with a 1 x 1 x 1 kernel, run as a matmul."""


class MatmulConvTranspose1d(_MatmulUpsample, nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` with kernel = stride, run as a matmul."""


class MatmulConvTranspose2d(_MatmulUpsample, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with kernel = stride, run as a matmul."""


class MatmulConvTranspose3d(_MatmulUpsample, nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` with kernel = stride, run as a matmul."""


MATMUL_CONV = {nn.Conv1d: MatmulConv1d, nn.Conv2d: MatmulConv2d, nn.Conv3d: MatmulConv3d}
MATMUL_UPSAMPLE = {nn.ConvTranspose1d: MatmulConvTranspose1d, nn.ConvTranspose2d: MatmulConvTranspose2d,
                   nn.ConvTranspose3d: MatmulConvTranspose3d}


def _rebuilt(conv: nn.Module, cls: type) -> nn.Module:
    kwargs = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                  bias=conv.bias is not None, padding_mode=conv.padding_mode)
    if isinstance(conv, tuple(MATMUL_UPSAMPLE)):
        kwargs["output_padding"] = conv.output_padding
    new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, device=conv.weight.device,
              dtype=conv.weight.dtype, **kwargs)
    new.load_state_dict(conv.state_dict())
    return new.train(conv.training)


def _matmul_class(module: nn.Module):
    """The matmul class that can stand in for ``module``, or None."""
    if type(module) in MATMUL_CONV and _is_pointwise(module):
        return MATMUL_CONV[type(module)]
    if type(module) in MATMUL_UPSAMPLE and _is_blockwise(module):
        return MATMUL_UPSAMPLE[type(module)]
    return None


def use_matmul_convolutions(model: nn.Module) -> int:
    """Swap every 1 x 1 convolution and kernel = stride transposed convolution of ``model`` for its
    matmul version, in place; returns how many were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            cls = _matmul_class(child)
            if cls is not None:
                setattr(parent, name, _rebuilt(child, cls))
                swapped += 1
    return swapped
