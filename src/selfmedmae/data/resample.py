"""Resampling to a new voxel spacing, one axis at a time, with MONAI's results and metadata.

MONAI's ``Spacing`` resamples through ``affine_grid`` + ``grid_sample``: a full 3D grid of coordinates
(12 bytes per output voxel) and 8 gathers per output voxel. When the output-to-input voxel map is
axis-aligned (exactly a scale and a shift per axis, as for any scan whose axes are the world's after
``Orientation``; an oblique scan's map carries rounding noise off the diagonal and takes MONAI's path),
trilinear and nearest interpolation are separable: one 1D interpolation per axis gives the same
values. On a BTCV-sized CT (512 x 512 x 150 -> 276 x 276 x 224, image bilinear + label nearest, 2
threads) that is 0.5-1.1 s instead of 1.9-2.6 s, and no 12-byte-per-voxel grid
(``benchmarks/bench_cache.py``).

Same numbers: the 1D sample positions are computed with the float32 operations ``affine_grid`` and
``grid_sample`` use (MONAI's normalised affine, the base grid, border clipping), so nearest-neighbour
picks the same voxel, ties included, and linear weights are the same; only the order in which the
three 1D weights are combined differs (rounding, ~1e-7 relative). The metadata (affine, the applied
operation and its ``extra_info``) is written by MONAI's own ``track_transform_meta`` with the values
``spatial_resample`` records, so ``Invertd`` inverts it exactly as MONAI's (its inverse is MONAI's).
Anything else (lazy resampling, other modes or padding, ``align_corners=True``, a rotating or
shearing map, fewer or more than 3 spatial axes) goes to MONAI's own path unchanged.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from monai.config import USE_COMPILED
from monai.data import MetaTensor
from monai.data.utils import AFFINE_TOL
from monai.networks.utils import to_norm_affine
from monai.transforms import Spacingd, SpatialResample
from monai.transforms.inverse import TraceableTransform
from monai.utils import TraceKeys, get_equivalent_dtype

MODES = ("bilinear", "nearest")


def _value(option) -> object:
    return getattr(option, "value", option)


def axis_positions(theta_norm: torch.Tensor, axis: int, n_in: int, n_out: int) -> torch.Tensor:
    """Input positions (voxel units, border-clipped) of the ``n_out`` samples along one ``axis``.

    ``theta_norm``: the 4x4 normalised output -> input map in array axis order, in the resampling dtype.
    Follows ``affine_grid`` (base grid ``linspace(-1, 1, n) * (n - 1) / n``, then scale + shift) and
    ``grid_sample`` (``((g + 1) * n_in - 1) / 2``, clipped to ``[0, n_in - 1]``) step by step in that dtype.
    """
    base = torch.linspace(-1, 1, n_out, dtype=theta_norm.dtype) * (n_out - 1) / n_out
    grid = base * theta_norm[axis, axis] + theta_norm[axis, 3]
    source = ((grid + 1) * n_in - 1) / 2
    return source.clamp(0, n_in - 1)


def resample_axis(x: torch.Tensor, dim: int, source: torch.Tensor, mode: str) -> torch.Tensor:
    """Interpolate tensor ``x`` along ``dim`` at the (clipped) positions ``source``."""
    if mode == "nearest":
        return x.index_select(dim, torch.round(source).long())  # nearbyint: ties to even, as grid_sample
    n_in = x.shape[dim]
    low = torch.floor(source)
    weight_high = source - low  # grid_sample's weights: (x - x_low) and (x_high - x)
    weight_low = (low + 1) - source
    low = low.long()
    high = (low + 1).clamp(max=n_in - 1)  # at the last voxel its weight is 0
    shape = [1] * x.ndim
    shape[dim] = -1
    out = x.index_select(dim, low) * weight_low.view(shape)
    return out.add_(x.index_select(dim, high) * weight_high.view(shape))


def axis_aligned(xform: torch.Tensor) -> bool:
    """True when the output -> input voxel map only scales and shifts each axis."""
    linear = xform[:-1, :-1]
    return bool(torch.count_nonzero(linear - torch.diag(torch.diagonal(linear))) == 0)


class AxisAlignedResample(SpatialResample):
    """``SpatialResample`` that resamples axis-aligned maps one axis at a time (see the module)."""

    def __call__(self, img: torch.Tensor, dst_affine: Optional[torch.Tensor] = None,
                 spatial_size=None, mode=None, padding_mode=None, align_corners: Optional[bool] = None,
                 dtype=None, lazy: Optional[bool] = None) -> torch.Tensor:
        mode_ = _value(self.mode if mode is None else mode)
        padding_ = _value(self.padding_mode if padding_mode is None else padding_mode)
        corners = self.align_corners if align_corners is None else align_corners
        lazy_ = self.lazy if lazy is None else lazy
        plain = (not lazy_ and not USE_COMPILED and mode_ in MODES and padding_ == "border" and not corners
                 and isinstance(img, MetaTensor) and img.ndim == 4 and not img.pending_operations
                 and dst_affine is not None and spatial_size is not None)
        if plain:
            dtype_pt = get_equivalent_dtype(dtype or self.dtype or img.dtype, torch.Tensor)
            out = self._separable(img, torch.as_tensor(dst_affine), [int(s) for s in spatial_size], mode_,
                                  padding_, corners, dtype_pt)
            if out is not None:
                return out
        return super().__call__(img, dst_affine, spatial_size, mode, padding_mode, align_corners, dtype, lazy)

    def _separable(self, img: MetaTensor, dst_affine: torch.Tensor, size: Sequence[int], mode: str,
                   padding_mode: str, align_corners, dtype_pt) -> Optional[MetaTensor]:
        src_affine = img.affine.to(torch.float64)
        if src_affine.shape != (4, 4) or tuple(dst_affine.shape) != (4, 4) or len(size) != 3:
            return None
        dst_affine = dst_affine.to(torch.float64)
        try:
            xform = torch.as_tensor(np.linalg.solve(src_affine.numpy(), dst_affine.numpy()), dtype=torch.float64)
        except np.linalg.LinAlgError:
            return None
        in_size = list(img.shape[1:])
        unchanged = list(size) == in_size and (
            torch.allclose(src_affine, dst_affine, atol=AFFINE_TOL)
            or torch.allclose(xform, torch.eye(4, dtype=torch.float64), atol=AFFINE_TOL))
        if unchanged or not axis_aligned(xform):
            return None  # MONAI returns the input as is, or rotates: its own path
        theta = to_norm_affine(xform.to(dtype_pt)[None], in_size, list(size), align_corners=False)[0]
        data = img.as_tensor().to(dtype_pt)
        # shrink first: each pass works on the smallest array so far
        for axis in sorted(range(3), key=lambda a: size[a] / in_size[a]):
            source = axis_positions(theta, axis, in_size[axis], size[axis])
            data = resample_axis(data, axis + 1, source, mode)
        info = {"dtype": str(dtype_pt)[6:], "mode": mode, "padding_mode": padding_mode,
                "align_corners": align_corners if align_corners is not None else TraceKeys.NONE,
                "src_affine": src_affine}
        meta = TraceableTransform.track_transform_meta(
            img, sp_size=torch.tensor(size), affine=xform, extra_info=info, orig_size=tuple(in_size),
            transform_info=self.get_transform_info(), lazy=False)
        out = MetaTensor(data.contiguous().to(torch.float32), copy_attr=False)
        return out.copy_meta_from(meta)


class SeparableSpacingd(Spacingd):
    """MONAI ``Spacingd`` (same arguments) whose resampling step is :class:`AxisAlignedResample`."""

    def __init__(self, keys, pixdim, *args, **kwargs) -> None:
        super().__init__(keys, pixdim, *args, **kwargs)
        old = self.spacing_transform.sp_resample
        self.spacing_transform.sp_resample = AxisAlignedResample(
            mode=old.mode, padding_mode=old.padding_mode, align_corners=old.align_corners, dtype=old.dtype,
            lazy=old.lazy)
