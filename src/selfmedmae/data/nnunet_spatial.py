"""nnU-Net's spatial augmentation on label-guided crops: :class:`RandCropRotateScaled`.

nnU-Net v2 (``nnUNetTrainer.get_training_transforms``, batchgeneratorsv2 ``SpatialTransform``) rotates with
p 0.2 (an angle drawn uniformly in +-30 degrees about each of the three axes) and scales with p 0.2 (one
factor drawn uniformly in 0.7..1.4 for all axes; factors above 1 show more of the volume, so objects shrink),
both in one resampling of the patch (matrix ``Rz @ Ry @ Rx @ S`` applied to the patch's centred sampling
grid); images bilinear, labels nearest here (nnU-Net interpolates one-hot labels linearly; nearest keeps
the label map a label map without an argmax). A patch that is neither rotated nor scaled is cut out
without resampling.

Context instead of black borders: nnU-Net loads a patch larger than the network's (its
``get_patch_size``, sized for the rotations and a scale of 0.85) and samples the centre of it, with zeros
wherever the rotated or scaled grid leaves that patch. Here each crop instead takes from the cached
volume exactly the region its own rotated and scaled grid covers (the roi's corners through the matrix,
plus one voxel for interpolation), so zeros appear only where the grid leaves the volume itself (as with
nnU-Net's zero padding at the volume's edge); no fixed margin is copied for crops that need none.

The crop centres are MONAI's ``RandCropByPosNegLabel`` draws for the roi (foreground / background by
``pos`` : ``neg``, kept so the roi fits in the volume), so with both probabilities 0 the crops equal those
of ``RandCropByPosNegLabeld``. Centres, angles and scale come from this transform's one MONAI random state.
"""
from __future__ import annotations

import math
from typing import Hashable, Mapping, Optional, Sequence

import numpy as np
import torch
from monai.transforms import Affine, MapTransform, RandCropByPosNegLabel, Randomizable

ROTATION = math.pi / 6  # nnU-Net's rotation_for_DA for 3D patches: +-30 degrees about each axis
SCALING = (0.7, 1.4)
P_ROTATION = 0.2
P_SCALING = 0.2


def nnunet_matrix(angles: Sequence[float], scale: float) -> np.ndarray:
    """batchgeneratorsv2's ``create_affine_matrix_3d``: ``Rz @ Ry @ Rx @ S`` [3, 3], output -> input offsets."""
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx @ np.diag([scale] * 3)


def margins(matrix: np.ndarray, roi: Sequence[int]) -> list[int]:
    """Voxels to add on each side of the roi so the grid ``matrix`` maps the roi onto stays inside (plus one
    voxel for the interpolation's neighbours)."""
    half = (np.asarray(roi, dtype=np.float64) - 1) / 2
    reach = np.abs(matrix) @ half  # the farthest input offset per axis, over the roi's corners
    return [max(0, math.ceil(r - h - 1e-6)) + 1 for r, h in zip(reach, half)]


def window(volume: torch.Tensor, start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """``volume`` [C, *S] cut to ``size`` from ``start`` (may lie outside): [C, *size], zeros outside, owned."""
    out = volume.new_zeros((volume.shape[0], *size))
    src, dst = [slice(None)], [slice(None)]
    for s, n, dim in zip(start, size, volume.shape[1:]):
        lo, hi = max(s, 0), min(s + n, dim)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - s, lo - s + max(hi - lo, 0)))
    out[tuple(dst)] = volume[tuple(src)]
    return out


class RandCropRotateScaled(Randomizable, MapTransform):
    """``num_samples`` label-guided crops of ``spatial_size``, each rotated and scaled as nnU-Net does
    (see the module). Returns a list of dicts, as ``RandCropByPosNegLabeld``; the index keys are dropped.

    ``modes``: one interpolation per key (``bilinear`` images, ``nearest`` labels); nearest keys keep their
    dtype (a uint8 label map stays uint8 and takes only values it had, or 0 outside the volume).
    """

    def __init__(self, keys: Sequence[str], label_key: str, spatial_size: Sequence[int], pos: float = 1.0,
                 neg: float = 1.0, num_samples: int = 1, image_key: Optional[str] = None,
                 fg_indices_key: Optional[str] = None, bg_indices_key: Optional[str] = None,
                 modes: Sequence[str] = ("bilinear", "nearest"), p_rotation: float = P_ROTATION,
                 rotation: float = ROTATION, p_scaling: float = P_SCALING,
                 scaling: Sequence[float] = SCALING) -> None:
        MapTransform.__init__(self, keys)
        self.label_key, self.image_key = label_key, image_key
        self.fg_indices_key, self.bg_indices_key = fg_indices_key, bg_indices_key
        self.roi = [int(s) for s in spatial_size]
        self.modes = dict(zip(self.keys, modes))
        self.p_rotation, self.rotation = float(p_rotation), float(rotation)
        self.p_scaling, self.scaling = float(p_scaling), (float(scaling[0]), float(scaling[1]))
        self.sampler = RandCropByPosNegLabel(spatial_size=self.roi, pos=pos, neg=neg, num_samples=num_samples,
                                             image_threshold=0.0)
        self.set_random_state(state=np.random.RandomState())
        self.centers: list = []
        self.matrices: list = []

    def set_random_state(self, seed=None, state=None) -> RandCropRotateScaled:
        super().set_random_state(seed, state)
        self.sampler.set_random_state(state=self.R)  # one stream: centres first, then each crop's geometry
        return self

    def _matrix(self) -> Optional[np.ndarray]:
        # batchgeneratorsv2 SpatialTransform.get_parameters: two coin flips, then the angles and the scale
        rotate, scale = self.R.uniform() < self.p_rotation, self.R.uniform() < self.p_scaling
        if not (rotate or scale):
            return None
        angles = self.R.uniform(-self.rotation, self.rotation, size=3) if rotate else np.zeros(3)
        factor = self.R.uniform(*self.scaling) if scale else 1.0
        return nnunet_matrix(angles, factor)

    def randomize(self, data: Mapping[Hashable, torch.Tensor]) -> None:
        fg = data.get(self.fg_indices_key) if self.fg_indices_key else None
        bg = data.get(self.bg_indices_key) if self.bg_indices_key else None
        image = data.get(self.image_key) if self.image_key else None
        self.sampler.randomize(label=data[self.label_key], fg_indices=fg, bg_indices=bg, image=image)
        self.centers = [[int(c) for c in centre] for centre in self.sampler.centers]
        self.matrices = [self._matrix() for _ in self.centers]

    def sample(self, volume: torch.Tensor, centre: Sequence[int], matrix: Optional[np.ndarray],
               mode: str) -> torch.Tensor:
        """One crop of ``volume`` [C, *S] around ``centre``: [C, *roi]."""
        start = [c - r // 2 for c, r in zip(centre, self.roi)]  # as MONAI's SpatialCrop(roi_center, roi_size)
        if matrix is None:
            return window(volume, start, self.roi)
        pad = margins(matrix, self.roi)
        region = window(volume, [s - m for s, m in zip(start, pad)], [r + 2 * m for r, m in zip(self.roi, pad)])
        affine = np.eye(4)
        affine[:3, :3] = matrix
        resample = Affine(affine=affine, spatial_size=self.roi, mode=mode, padding_mode="zeros", image_only=True)
        out = torch.as_tensor(resample(region.float()))  # [C, *roi], the region's centre at the roi's centre
        return out.to(volume.dtype) if mode == "nearest" else out

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> list[dict]:
        d = dict(data)
        self.randomize(d)
        for key in (self.fg_indices_key, self.bg_indices_key):
            d.pop(key, None)
        crops = []
        for centre, matrix in zip(self.centers, self.matrices):
            item = dict(d)
            for key in self.key_iterator(d):
                item[key] = self.sample(torch.as_tensor(d[key]), centre, matrix, self.modes[key])
            crops.append(item)
        return crops
