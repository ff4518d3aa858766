"""MONAI's NIfTI reader, with the one copy it makes of each volume done by torch.

NIfTI stores voxels in Fortran order. ``LoadImage`` turns the reader's array into a C-ordered float32
array with NumPy (``astype`` then ``ascontiguousarray``): a single-threaded transposing copy that takes
0.7-1.7 s for a 512 x 512 x 150 CT. :class:`TorchCopyNibabelReader` hands ``LoadImage`` an array that is
already C-ordered float32, made by one ``Tensor.copy_`` (the dtype conversion and the transposition in a
single multi-threaded pass, ~0.35 s on 2 threads), so ``LoadImage`` has nothing left to copy. The values
are the same (a float32 cast of the stored, scaled voxels), and so are the metadata: reading, affines,
channel handling and scaling stay MONAI's ``NibabelReader``'s.
"""
from __future__ import annotations

import numpy as np
import torch
from monai.data import NibabelReader

TILE = 32  # edge of the tiles of the transposing copy (best of 8-64 on a 512 x 512 x 150 CT)
# dtypes torch.from_numpy takes whose cast to float32 torch and NumPy do alike
_TORCH_CASTS = {np.dtype(t) for t in ("uint8", "int8", "int16", "int32", "int64", "float16", "float32",
                                      "float64", "bool")}


def as_c_float32(array: np.ndarray) -> np.ndarray:
    """``np.ascontiguousarray(array, dtype=np.float32)``, by tiled torch copies where it can."""
    if (array.ndim < 2 or array.dtype.newbyteorder("=") != array.dtype or array.dtype not in _TORCH_CASTS
            or not array.flags.writeable):  # torch.from_numpy warns on read-only arrays
        return np.ascontiguousarray(array, dtype=np.float32)  # NumPy's way
    source = torch.from_numpy(array)
    out = torch.empty(array.shape, dtype=torch.float32)
    for i in range(0, array.shape[0], TILE):
        for k in range(0, array.shape[-1], TILE):
            out[i:i + TILE, ..., k:k + TILE].copy_(source[i:i + TILE, ..., k:k + TILE])
    return out.numpy()


class TorchCopyNibabelReader(NibabelReader):
    """``NibabelReader`` whose arrays come out C-ordered float32 (for ``LoadImage(dtype=float32)``)."""

    def _get_array_data(self, img, filename):
        return as_c_float32(super()._get_array_data(img, filename))
