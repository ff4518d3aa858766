"""Pre-training's random steps on a cached volume in plain torch: label-guided crops, then flips.

:class:`LabelGuidedCropsFlips` gives, for the same seed, exactly the crops of the MONAI chain it stands in
for in pre-training (``RandCropByPosNegLabeld`` -> ``Detachd`` -> ``RandFlipd`` per axis -> drop the label
-> float32, seeded as a ``Compose`` seeds its members), without that chain's per-call dictionary copies,
metadata handling and fresh random generators: its generators are made once and re-seeded in place, which
gives the same streams as new ones. ``tests/test_fast_crops.py`` compares the two item by item.

:func:`seed_transform` seeds a MONAI ``Compose`` the way ``Compose.set_random_state`` does (a generator
seeded with ``seed`` hands each random member a seed of its own, in order), re-seeding in place where a
member allows it (``reseed``); :class:`~selfmedmae.train.rng.SeededDataset` seeds every item with it.
"""
from __future__ import annotations

from copy import deepcopy
from typing import Hashable, List, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Randomizable, Transform
from monai.utils import MAX_SEED


def _state(owner, name: str = "R") -> np.random.RandomState:
    """``owner``'s own generator ``name`` (made once; never the class-wide default MONAI falls back to)."""
    state = owner.__dict__.get(name)
    if state is None:
        state = np.random.RandomState()
        setattr(owner, name, state)
    return state


def _child_seed(state: np.random.RandomState) -> int:
    return int(state.randint(MAX_SEED, dtype="uint32"))


def seed_transform(transform, seed: int) -> None:
    """Seed ``transform`` with ``seed`` exactly as ``transform.set_random_state(seed=seed)`` would."""
    if hasattr(transform, "reseed"):
        transform.reseed(seed)
    elif isinstance(transform, Compose) and type(transform).set_random_state is Compose.set_random_state:
        state = _state(transform)
        state.seed(int(np.int64(seed) % MAX_SEED))
        for member in transform.transforms:
            if isinstance(member, Randomizable):
                seed_transform(member, _child_seed(state))
    else:
        transform.set_random_state(seed=seed)


def _numpy(indices) -> np.ndarray:
    return indices.numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices)


class LabelGuidedCropsFlips(Randomizable, Transform):
    """``num_samples`` crops of ``roi_size`` per volume, centred on a foreground voxel with probability
    ``pos / (pos + neg)`` and on a background one otherwise (from the cached candidate indices), each then
    flipped along each spatial axis with probability ``flip_prob``. Input: a cached item with ``image``
    [C, *S], ``label`` and the two index keys; output: a list of items with ``image`` [C, *roi] float32 and
    the item's other keys (the label only guided the crops)."""

    def __init__(self, roi_size: Sequence[int], num_samples: int, pos: float, neg: float, flip_prob: float,
                 index_keys: Sequence[str], image_key: str = "image", label_key: str = "label") -> None:
        if pos < 0 or neg < 0 or pos + neg == 0:
            raise ValueError(f"pos and neg must be non-negative and not both 0, got pos={pos} neg={neg}")
        self.roi_size = tuple(int(s) for s in roi_size)
        self.num_samples, self.pos_ratio, self.flip_prob = int(num_samples), pos / (pos + neg), float(flip_prob)
        self.fg_key, self.bg_key = index_keys
        self.image_key, self.label_key = image_key, label_key
        self.spatial_dims = len(self.roi_size)
        self.flip_states = [np.random.RandomState() for _ in range(self.spatial_dims)]

    # seeding: as the chain's Compose would seed its crop step, then one flip step per axis
    def reseed(self, seed: int) -> "LabelGuidedCropsFlips":
        order = _state(self, "_order")
        order.seed(int(np.int64(seed) % MAX_SEED))
        _state(self).seed(_child_seed(order))
        for state in self.flip_states:
            state.seed(_child_seed(order))
        return self

    def set_random_state(self, seed=None, state=None):
        if seed is None:
            raise ValueError("LabelGuidedCropsFlips is seeded with an integer seed")
        return self.reseed(seed)

    def randomize(self, data=None) -> None:  # draws happen in __call__, in the chain's order
        pass

    def centers(self, shape: Sequence[int], fg: np.ndarray, bg: np.ndarray) -> List[tuple]:
        """Crop centres inside the volume, as MONAI's ``generate_pos_neg_label_crop_centers``."""
        if len(fg) == 0 and len(bg) == 0:
            raise ValueError("no voxel to centre a crop on (empty foreground and background)")
        pos_ratio = self.pos_ratio if len(fg) and len(bg) else (0.0 if len(fg) == 0 else 1.0)
        shape = [int(n) for n in shape]
        if any(n < s for n, s in zip(shape, self.roi_size)):
            raise ValueError(f"the crop {self.roi_size} is larger than the volume {tuple(shape)}")
        # the valid centres [lo, hi): MONAI's floor(s / 2) .. uint16(n + 1 - s / 2), widened where empty
        lo = [s // 2 for s in self.roi_size]
        hi = [int(n + 1 - s / 2) for n, s in zip(shape, self.roi_size)]
        hi = [h + 1 if h == a else h for a, h in zip(lo, hi)]
        strides = [1] * len(shape)  # C order, as the flat indices were taken
        for i in range(len(shape) - 2, -1, -1):
            strides[i] = strides[i + 1] * shape[i + 1]
        out = []
        for _ in range(self.num_samples):
            pool = fg if self.R.rand() < pos_ratio else bg
            flat = int(pool[self.R.randint(len(pool))])
            centre = []
            for stride in strides:
                c, flat = divmod(flat, stride)
                centre.append(c)
            out.append(tuple(min(max(c, a), h - 1) for c, a, h in zip(centre, lo, hi)))
        return out

    def __call__(self, data) -> List[dict]:
        d = dict(data)
        fg, bg = (_numpy(d.pop(k)) for k in (self.fg_key, self.bg_key))
        image = d.pop(self.image_key)
        image = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
        d.pop(self.label_key, None)
        rest = {k: v for k, v in d.items()}
        crops: List[torch.Tensor] = []
        for centre in self.centers(image.shape[1:], fg, bg):
            starts = [max(c - s // 2, 0) for c, s in zip(centre, self.roi_size)]
            index = (slice(None),) + tuple(slice(a, a + s) for a, s in zip(starts, self.roi_size))
            crops.append(image[index])
        flips: List[List[int]] = [[] for _ in crops]
        for axis, state in enumerate(self.flip_states):  # each axis's step sees every crop in turn
            for i in range(len(crops)):
                if state.rand() < self.flip_prob:
                    flips[i].append(axis + 1)
        out = []
        for crop, dims in zip(crops, flips):
            crop = torch.flip(crop, dims) if dims else crop.clone(memory_format=torch.contiguous_format)
            item: dict[Hashable, object] = {k: deepcopy(v) for k, v in rest.items()}
            item[self.image_key] = crop.to(torch.float32)
            out.append(item)
        return out
