"""Seeds and random-generator state, so runs are reproducible and a resumed run is exact.

Every epoch reseeds from (seed, epoch), and every sample's augmentation is seeded from
(seed, epoch, index): the data a step sees does not depend on worker count, process count, or where a
run was interrupted. Generator states are also stored in checkpoints and restored on resume.
"""
from __future__ import annotations

import bisect
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from selfmedmae.data.fast_crops import seed_transform

_PRIME = 1_000_003


def mix(*values: int) -> int:
    seed = 0
    for v in values:
        seed = (seed * _PRIME + int(v)) % (2**31 - 1)
    return seed


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    # numpy's key array travels as a tensor: weights-only checkpoints hold tensors, not numpy objects
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _transform_of(dataset: Dataset, index: int) -> Any:
    """The transform that item ``index`` of ``dataset`` goes through (a ConcatDataset's part's)."""
    if isinstance(dataset, ConcatDataset):
        part = bisect.bisect_right(dataset.cumulative_sizes, index)
        return _transform_of(dataset.datasets[part], index - (dataset.cumulative_sizes[part - 1] if part else 0))
    return getattr(dataset, "transform", None)


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


class SeededDataset(Dataset):
    """Wraps a dataset so item ``i`` of epoch ``e`` is drawn with generators seeded by (seed, e, i)."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int | tuple[int, int]) -> Any:
        # (epoch, index) pairs come from EpochIndices: workers that live across epochs learn the epoch
        # from the index, as their copy of this object does not see set_epoch
        epoch, index = index if isinstance(index, tuple) else (self.epoch, index)
        seed = mix(self.seed, epoch, index)
        transform = _transform_of(self.dataset, index)
        if hasattr(transform, "set_random_state"):
            seed_transform(transform, seed)  # MONAI Compose: every random transform's own generator
        py, npy = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % 2**32)
            # the CPU generator only (as fork_rng restores only it): torch.manual_seed would also queue a
            # seed for every accelerator, which costs more than cropping a volume
            torch.default_generator.manual_seed(seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py)
                np.random.set_state(npy)
